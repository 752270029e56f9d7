"""Exit codes that pipelines rely on (DESIGN.md, "Commands and exit codes")."""

PROMOTED = 0
ROLLED_BACK = 1
INVALID_INPUT = 2
OPERATIONAL = 3

ANALYSIS_PASS = 0
ANALYSIS_FAIL = 1
ANALYSIS_MARGINAL = 4
