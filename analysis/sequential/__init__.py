"""The sequential judge: anytime-valid canary analysis (see README.md for the maths).

Use `SequentialJudge` through the Judge protocol, or `judge_look` for one metric:

>>> from analysis.metric_data import Counts
>>> from analysis.sequential import judge_look
>>> first = judge_look(Counts(2, 1000), Counts(25, 1000))   # errors/requests, this look
>>> first.decision.value
'rollback'
>>> import json
>>> state = json.loads(json.dumps(first.state))             # what a controller stores
"""

from analysis.sequential.judge import SequentialJudge, alpha_shares
from analysis.sequential.library import MetricLook, judge_look
from analysis.sequential.reading import Reading

__all__ = ["MetricLook", "Reading", "SequentialJudge", "alpha_shares", "judge_look"]
