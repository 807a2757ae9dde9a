"""The autoscaler: how many workers each GPUPool should have (demand, decision, its
event-driven loop) and the worker pods that carry them out (pods, controller)."""
