"""How long things take in the local Azure: the ``fast`` and ``realistic`` timing profiles.

``[sim] profile = "fast"`` (the default) keeps the suite quick: scripts start
``agent_start_delay_s`` (0.2 s) after the PUT, the instance view changes state at once, a DELETE
ends on the event loop's next turn (``delete_duration_s`` = 0: its 202 still names an operation,
and the run command is listed as ``Deleting`` until then). The suite's own fleet sets 0.3 s; 0 is
the default because azrun's fleet does not yet wait for deletes (issue 13, section 2). ``profile = "realistic"`` follows recorded Azure
(docs/architecture.md, "Local Azure vs recorded Azure"):

- dispatch latency (PUT to the script's ``startTime``) drawn from the recorded samples below:
  VMs 7-13 s (median 9.5), scale-set instances 7-43 s (median 27.5), plus up to 1 s of jitter;
- the first managed run command on a machine also installs the handler: ``handler_install_s``
  (default 60-120 s in realistic, 0 in fast), drawn once per machine;
- the agent reports state every ``agent_status_interval_s`` (15 s): start and completion become
  visible at the next report, not at once (``agent_status_cadence``);
- a DELETE lasts a duration drawn from the recorded ones (10-19 s, with the 40 s and 211 s
  outliers), during which the run command is still listed as ``Deleting``.

Every explicit ``[sim]`` setting wins over the profile. Draws come from one generator seeded with
``[sim] seed``, so a run is reproducible.
"""

from __future__ import annotations

import random

from azrun.sim.fleettypes import SimSettings

#: Seconds from the PUT's ``date`` to the instance view's ``startTime`` (runcommand-timings.csv).
VM_START_S = (7.0, 7.0, 8.0, 8.0, 9.0, 9.0, 9.0, 10.0, 10.0, 12.0, 13.0, 13.0, 13.0, 13.0)
VMSS_START_S = (7.0, 8.0, 10.0, 12.0, 13.0, 15.0, 24.0, 26.0, 29.0, 29.0, 31.0, 35.0, 38.0, 41.0, 42.0, 43.0)
#: Recorded DELETE operation durations (Azure CLI, n=32) plus the Go SDK's 40 s and 211 s.
DELETE_S = (
    10.2, 10.22, 10.22, 10.23, 10.28, 11.02, 13.83, 13.91, 13.95, 14.28, 14.63, 14.7, 15.52, 16.14, 17.22,
    10.33, 10.34, 10.36, 10.41, 10.42, 10.42, 10.44, 10.47, 10.55, 14.45, 15.11, 16.09, 16.3, 16.45, 16.67,
    18.38, 18.64, 40.0, 211.0,
)
PROFILES = ("fast", "realistic")
REALISTIC_INSTALL_S = (60.0, 120.0)


class Timing:
    """The profile's delays, drawn reproducibly (one generator per world)."""

    def __init__(self, settings: SimSettings) -> None:
        self.settings = settings
        self.realistic = settings.profile == "realistic"
        self._rng = random.Random(settings.seed)
        self._installed: set[str] = set()

    @property
    def status_cadence(self) -> bool:
        """Whether state changes wait for the agent's next report."""
        s = self.settings
        return s.agent_status_cadence if s.agent_status_cadence is not None else self.realistic

    def start_delay(self, machine_id: str, *, scale_set_vm: bool, managed: bool = True) -> float:
        """Seconds from the PUT to the script starting (handler install included on a first run)."""
        s = self.settings
        if s.agent_start_delay_s is not None:
            delay = s.agent_start_delay_s
        elif self.realistic:
            delay = self._rng.choice(VMSS_START_S if scale_set_vm else VM_START_S) + self._rng.random()
        else:
            delay = 0.2
        key = f"{machine_id.lower()}|{'managed' if managed else 'action'}"
        if key not in self._installed:
            self._installed.add(key)
            low, high = s.handler_install_s or (REALISTIC_INSTALL_S if self.realistic else (0.0, 0.0))
            delay += self._rng.uniform(low, high) if high > 0 else 0.0
        return delay

    def delete_duration(self) -> float:
        """Seconds a DELETE's operation lasts (the run command is listed as Deleting meanwhile)."""
        s = self.settings
        if s.delete_duration_s is not None:
            low, high = s.delete_duration_s
            return self._rng.uniform(low, high) if high > low else low
        return self._rng.choice(DELETE_S) if self.realistic else 0.0

    def report_phase(self) -> float:
        """When, within one status interval, this execution's agent reports first."""
        return self._rng.uniform(0.0, self.settings.agent_status_interval_s)
