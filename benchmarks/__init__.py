"""SimplePO benchmarks: the kit's SimPO/DPO step against TRL on the same work (``python -m benchmarks.run``)."""
