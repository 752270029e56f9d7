"""Where measurements come from: the mesh, Prometheus, Datadog, Splunk, files.

Each provider turns a query, a scope (baseline or canary) and a time window into the
data types of `analysis.metric_data`. Providers import nothing of ours but `analysis`.
"""
