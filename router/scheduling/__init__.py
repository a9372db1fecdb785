"""Replica scheduling as filters -> weighted scorers -> picker, one profile per pool.

    candidates = [ReplicaView(...)]                      live replicas with load and prefix match
    profile.rank(request, candidates) -> ProfileResult   filters drop, scorers score in [0, 1],
                                                         the picker orders what is left
    Scheduler.schedule(...) -> Decision                  decode pick, decider, prefill pick

Decisions are plain data (`Decision`); the request path acts on them. Nothing here does I/O.
"""
