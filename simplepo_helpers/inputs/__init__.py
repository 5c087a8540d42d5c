"""The input side of the data, apart from the core's checks: reading JSONL files line by line (``jsonl``),
TRL's implicit-prompt rows made explicit (``implicit``) and the validation report (``report``)."""
