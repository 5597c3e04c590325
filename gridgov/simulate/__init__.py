"""Simulate a district's shift: random incidents run through the real dispatcher and workflow.

The simulation is a discrete-event loop over one district held in memory (the store is never
touched). Incidents arrive as a Poisson process per grid; each goes through
:func:`gridgov.dispatch.dispatch_incident` exactly as a live incident would (without drawing
routes), units stay busy for their travel plus an on-scene service time, and incidents that find no
free unit of a kind wait in a queue until one frees. Each incident also goes through the workflow
(:mod:`gridgov.workflow`): every step is built by :func:`gridgov.workflow.next_event`, so the
state machine checks it and every incident's log replays cleanly.

Assumptions (ours, not the catalogue's; each number is a parameter or a module constant)
----------------------------------------------------------------------------------------
Arrivals
    A non-homogeneous Poisson process, piecewise constant per clock hour: in the hour starting at
    local hour ``h`` the district-wide rate is ``rate_per_hour × profile[h]``. The default rate,
    :data:`DEFAULT_RATE_PER_HOUR` = 40 incidents per hour (960 a day), is our estimate of the
    dispatched events (not every report) of an urban district of about a million people; a
    small share of them is turned into duplicate reports (see "Workflow").
    The profile is normalised to a mean of 1, so ``rate_per_hour`` stays the daily mean rate. The
    default :data:`URBAN_DAY_PROFILE` is an urban day curve: quiet at night (≈ 0.25 of the mean
    at 03:00-05:00), rising from 07:00, a late-morning peak (≈ 1.5 at 10:00-11:00), a dip at
    lunch (≈ 1.2) and the day's peak in the early evening (≈ 1.55 at 19:00). Clock hours are
    those of ``start``'s time zone (default :data:`DEFAULT_START`, Monday 2026-11-30 00:00 China
    Standard Time, UTC+8).
Where
    Each arrival picks a grid with probability proportional to its weight, then a point uniformly
    inside the grid polygon (rejection sampling in lon/lat, which is uniform on the ground to
    within 0.01 % over a grid of a few hundred metres). The default weight of a grid is the number
    of micro-grids in it: a real micro-grid is 30-100 households, so the count follows
    population (in the generated reference district micro-grids were shared out by area, so
    there the weight is in effect the grid's area). Without micro-grids the grid's area is used;
    without grids, the communities (or the streets) take their place. Incidents are reported
    where people are, next to a road: a point farther than ``settings.max_snap_m`` from the
    roads of any travel mode the units use, which the dispatcher would refuse, is drawn again in
    the same grid (:data:`REDRAW_ROUNDS` = 20 rounds at most); the summary counts the points
    drawn again (``points_redrawn``). A point still too far after that is refused by the
    dispatcher (status ``refused``, with its reason) and reported, not hidden. With the default
    2.5 km no point of the reference district is that far from its main roads; with 1 km about
    6 % of raw points are, and about 3 % of arrivals end refused.
What
    The matter is drawn from the catalogue with a weight per matter; the default weight depends on
    the priority only, :data:`PRIORITY_MIX` = {1: 0.5, 2: 1, 3: 2, 4: 3}: minor matters are the
    bulk of a day's work. On the 34-matter catalogue this gives about 6 % priority-1, 19 % P2,
    48 % P3 and 28 % P4 incidents.
Service
    Once on scene, every unit of an incident stays for the incident's service time, a lognormal
    draw with median :data:`SERVICE_MEDIAN_MIN` by priority ({1: 60, 2: 45, 3: 30, 4: 20}
    minutes) and log-sd :data:`SERVICE_SIGMA` = 0.5 (mean ≈ 1.13 × median, p90 ≈ 1.9 × median).
    A unit is busy from its assignment for travel + service.
After service
    Station units (every kind but grid workers) return to their home position (their position at
    the start, or their office's) and are available at once: the drive back is not modelled, as
    a returning unit is available by radio. Grid workers stay where they finished when that is in
    their own grid (they patrol it), and otherwise return to their home position.
Start of the shift
    Every on-duty unit starts available at its home position, whatever its status in the store;
    off-duty units stay off. A unit with no position and no office is left out (counted).
Queue
    A required kind with no available unit anywhere is left unfilled by the dispatcher; the
    incident then waits for that kind in a queue ordered by priority, then report time, then
    id, and is dispatched again (for the missing kinds only) whenever a unit of that kind frees.
    The units it already has are not held back: they go and serve.
Preemption
    The dispatcher's rule: a priority-1 matter with no available unit of a kind within its
    maximum travel time may take a unit busy on a low-priority incident. The simulation then
    re-queues the preempted incident for that kind and counts it; it is dispatched again at once
    if a unit of that kind is available (possibly beyond its maximum travel time). A preempted
    unit leaves from where it is: the old incident's place if it had arrived there, else where it
    set off from.
Workflow
    The workflow's own draws come from a second random generator seeded from the same seed, so
    they leave the arrivals as they were drawn. At its report an incident is reported (by its
    reporter) and registered by the dispatcher, or rejected as invalid when the dispatcher
    refuses its point. Duplicates: with probability ``duplicate_rate`` (default
    :data:`DUPLICATE_RATE` = 0.03) an arrival becomes a second report of a registered, not yet
    closed incident reported within ``settings.duplicate_window_h``, picked uniformly: it takes
    that incident's matter and a point uniform in a disc of 0.9 × ``settings.duplicate_radius_m``
    around it, is rejected as a duplicate (``duplicate_of``) and never dispatched. With no such
    incident open the arrival stays genuine.
    The workflow follows the lead unit (the matter's lead kind): the incident is dispatched when
    its lead is assigned (the event's office is the lead unit's office, its level the
    dispatcher's escalation level); assisting units are booked as before, without events of their
    own. The lead's office acknowledges after a lognormal delay (median ``ack_median_min``,
    default :data:`ACK_MEDIAN_MIN` = 3 min, log-sd :data:`ACK_SIGMA` = 0.9, so that some miss
    the 1-2 minute deadlines of priority-1 matters); that is paperwork that may lag the unit's
    own response, so the unit's travel and service are not delayed by it, but the arrival is
    recorded when the lead unit gets there or at the acknowledgement, whichever is later, and an
    acknowledgement never comes after the unit has finished. The incident is resolved when the
    lead unit finishes its service.
    With probability ``return_rate`` (default :data:`RETURN_RATE` = 0.02) a department returns
    the call at the moment it would have acknowledged it (one of :data:`RETURN_REASONS`): its
    unit, which never set off, is free again, and the incident goes back to the dispatcher,
    which passes over every unit of the returning office unless no other unit can lead it now.
    Grid workers are the street's own staff and do not return work.
    A grid worker (of the incident's grid) verifies on site after a lognormal delay (median
    :data:`VERIFY_MEDIAN_MIN` = 45 min, log-sd :data:`VERIFY_SIGMA` = 0.6). With probability
    ``verify_fail_rate`` (default :data:`VERIFY_FAIL_RATE` = 0.05) the check fails and the
    incident is reopened (rework): a new round of dispatch for every required kind, with a new
    service time drawn; otherwise it is verified and closed at once. With probability
    ``evaluate_rate`` (default :data:`EVALUATE_RATE` = 0.6) the reporter evaluates a closed
    incident after a lognormal delay (median :data:`EVALUATE_MEDIAN_MIN` = 240 min, log-sd
    :data:`EVALUATE_SIGMA` = 0.8): satisfied / basically satisfied / dissatisfied with shares
    :data:`SATISFACTION_ON_TIME` (0.75, 0.18, 0.07) when it closed within the matter's resolve
    deadline (counted from its first dispatch) and :data:`SATISFACTION_LATE` (0.35, 0.35, 0.30)
    otherwise. A return or a reopen sends the incident back to the dispatcher: dispatched again
    at once if a unit is free, else queued as above. Preempting a lead unit records a requeue
    (back to registered); an assisting unit taken away is re-queued without an event, and one
    taken after its lead resolved is not replaced. An assisting kind still missing when the lead
    resolves is no longer waited for. No supervision is recorded (that is
    ``gridgov supervise``'s work on a live store).
Horizon
    Arrivals are drawn in ``[start, start + hours)`` and the loop stops there: nothing is
    recorded after it, and incidents still waiting then are "unassigned at the end". Every
    arrival ends in exactly one dispatch status: ``assigned`` (at once), ``queued_then_assigned``,
    ``unassigned`` (a required kind missing in its latest round), ``refused`` (by the dispatcher:
    too far from the roads) or ``duplicate``; and in one workflow state (its ``status``).

Response time of an assignment = wait (start of its round → assignment) + travel time; a round
starts at the report, or at a reopen. The summary gives its percentiles per force kind, the share
of fully assigned incidents resolved at each escalation level, the counts of queued, preempted and
unassigned incidents, and the workflow's figures: calls and those acknowledged in time, resolved,
closed (on time), reworked, returned, requeued, evaluated (satisfied) and duplicates, the events
per action and the final states.
"""

# The names the command line, the notebooks and the tests use; the rest live in the modules.
from gridgov.simulate.arrivals import (
    DEFAULT_RATE_PER_HOUR,
    DEFAULT_START,
    REDRAW_ROUNDS,
    draw_arrivals,
)
from gridgov.simulate.outcome import PERCENTILES, SimulationResult, format_summary
from gridgov.simulate.run_state import RETURN_RATE, VERIFY_FAIL_RATE
from gridgov.simulate.shift_run import SOURCE, simulate

__all__ = [
    "DEFAULT_RATE_PER_HOUR",
    "DEFAULT_START",
    "PERCENTILES",
    "REDRAW_ROUNDS",
    "RETURN_RATE",
    "SOURCE",
    "VERIFY_FAIL_RATE",
    "SimulationResult",
    "draw_arrivals",
    "format_summary",
    "simulate",
]
