"""The dispatcher: the nearest suitable unit under street command, with escalation.

Single-incident dispatch follows DESIGN.md "Dispatch semantics" exactly. For each force kind the
catalogue matter requires (lead first, then the assisting kinds; joint enforcement takes one unit
of each, and no unit fills two slots), the candidates are the units of that kind that are
available, on duty, positioned on a usable road and not excluded. Their cost is the travel time
from the unit to the incident over the road network of the unit's travel mode, access legs
included (:mod:`gridgov.network`). The tiers are tried in order, and a tier accepts when its best
candidate arrives within the matter's maximum travel time:

``own_grid``
    only for grid-level matters and the grid-worker kind: the worker(s) of the incident's grid
    (level ``community``);
``street``
    the units the incident's street commands (level ``community`` for a grid worker of the
    incident's community, else ``street``);
``neighbour``
    the street's units and those of the streets whose polygons touch it (level ``neighbour``);
``district``
    every unit of the kind (level ``district``).

When no tier accepts, a priority-1 matter may preempt the nearest unit busy on a low-priority
incident within the maximum travel time (rule ``preemption``); otherwise the best candidate of
the district is assigned anyway (rule ``best_over_max_travel``, level ``district``), and a kind
with no candidate at all is ``unfilled``. Ties go to the smaller ``unit_id``.

Units that cannot be candidates (off duty, busy, excluded, without a usable position, farther
than ``settings.max_snap_m`` from their mode's roads) are recorded in the explanation with the
reason. An incident farther than ``max_snap_m`` from the roads of a travel mode that units of its
kinds use is refused (:class:`~gridgov.errors.InputError` naming the point and the distance).

Exact minima at low cost: every search is a bounded reverse search from the incident, one per
travel mode, and the widest one so far is reused by every later tier and kind. A tier first asks
for times up to a little more than the smallest typical time of its candidates (their admissible
lower bound times the travel model's typical ratio); while that finds nothing, the limit doubles
up to the maximum travel time. A field with limit ``L`` is exact for every time up to ``L``, so
the minimum found within the limit is the true minimum, and a decision usually costs one small
search per mode (on a large network, a search on a region around the incident: see
:meth:`gridgov.network.RoadNetwork.field_to`).

Batch mode (:func:`dispatch_batch`) assigns many pending incidents at once, minimising the total
priority-weighted travel time by one rectangular assignment problem per force kind
(:func:`scipy.optimize.linear_sum_assignment`), with times searched lazily (see there);
:func:`dispatch_greedy` is the nearest-first baseline in arrival order under the same
eligibility.

The package, by topic: :mod:`~gridgov.dispatch.records` (the incident, decision and batch
records and their JSON), :mod:`~gridgov.dispatch.pool` (the context, effective positions and the
unit pool), :mod:`~gridgov.dispatch.rules` (the rules every path shares: effective position, unit
rank, candidate order), :mod:`~gridgov.dispatch.search` (an incident's travel searches and the
batch's search worker), :mod:`~gridgov.dispatch.single` (single dispatch, escalation,
preemption, explanation), :mod:`~gridgov.dispatch.batch` (the optimal batch and the greedy
baseline) and :mod:`~gridgov.dispatch.together` (reports that arrive together: the single rule
in arrival order, improved jointly). Import the public names from here.
"""

from gridgov.dispatch.batch import (
    BATCH_HORIZON_FACTOR,
    PRIORITY_WEIGHT,
    dispatch_batch,
    dispatch_greedy,
)
from gridgov.dispatch.choice import RULE_CHOSEN, Candidate, Options, dispatch_options
from gridgov.dispatch.pool import DispatchContext, UnitPool, build_context, prepare_units
from gridgov.dispatch.records import (
    Assignment,
    BatchResult,
    Considered,
    Decision,
    Incident,
    Placement,
    json_text,
    jsonable,
    route_to_geojson,
)
from gridgov.dispatch.rules import (
    best_candidate,
    candidate_order,
    effective_positions,
    may_preempt,
    position_is_stale,
    stale_before,
    unit_rank,
)
from gridgov.dispatch.search import presnap
from gridgov.dispatch.single import (
    EXPLAIN_MAX_CANDIDATES,
    TIER_RULES,
    TIERS,
    dispatch_incident,
    dispatch_pool,
    locate_incident,
    refused_decision,
)
from gridgov.dispatch.together import (
    RULE_JOINT,
    Pending,
    decide_together,
    decide_urgent,
    weighted_time_s,
)

__all__ = [
    "BATCH_HORIZON_FACTOR",
    "EXPLAIN_MAX_CANDIDATES",
    "PRIORITY_WEIGHT",
    "RULE_CHOSEN",
    "RULE_JOINT",
    "TIERS",
    "TIER_RULES",
    "Assignment",
    "BatchResult",
    "Candidate",
    "Considered",
    "Decision",
    "DispatchContext",
    "Incident",
    "Options",
    "Pending",
    "Placement",
    "UnitPool",
    "best_candidate",
    "build_context",
    "candidate_order",
    "decide_together",
    "decide_urgent",
    "dispatch_batch",
    "dispatch_greedy",
    "dispatch_incident",
    "dispatch_options",
    "dispatch_pool",
    "effective_positions",
    "json_text",
    "jsonable",
    "locate_incident",
    "may_preempt",
    "position_is_stale",
    "prepare_units",
    "presnap",
    "refused_decision",
    "route_to_geojson",
    "stale_before",
    "unit_rank",
    "weighted_time_s",
]
