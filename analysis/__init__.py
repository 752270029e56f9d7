"""Statistics and judging for canary analysis.

Pure: numbers in, verdicts out. Imports nothing of canaryctl's other packages and
touches no network, clock or file, so it can be used as a library with only numpy
and scipy installed.
"""
