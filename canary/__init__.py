"""The controller: rollout spec, step state machine, store, hooks, HTTP API."""
