"""Measuring a trained policy against its reference: sampling, judging, win rates with intervals, KL,
implicit rewards, cached comparison runs and the results file."""
