"""The application layer: the one path every front end (CLI, native API, Open311, pages) calls.

It sits over the pure core (:mod:`gridgov.dispatch`, :mod:`gridgov.workflow`, ...) and the
persistence layer (:mod:`gridgov.store`) and owns the steps between them: intake, unit state,
dispatch commit, a dispatcher's own choices and the streets' dispatch modes, the workspace's
queue and board, workflow actions and who may see what. Front ends translate requests into
these calls and hold no rule of their own.
"""
