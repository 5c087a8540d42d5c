"""Beyond the notebook: the config-driven entry point (``python -m simplepo_helpers.scale.cli`` or
``simplepo-train``, also under ``accelerate launch``), LoRA through PEFT, and real models and data from the Hub
(the cpu/gpu profiles the lessons load live in ``lessons``)."""
