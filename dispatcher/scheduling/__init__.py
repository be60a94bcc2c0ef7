"""Deciding which run goes where and when: the take (priority, fairness, limits), handing runs to RQ,
moving waiting runs to idle workers, the scheduler process, and the reaper of runs whose worker died."""
