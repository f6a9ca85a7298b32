"""The embedded default benchmark: a LUME-format data generator (``synth``), a tiny OLMo target
trained until it has memorised it (``target``), and the whole loop in one command (``demo``).
An application on the core: it registers ``unlearn data synth``, ``unlearn target build`` and
``unlearn demo`` through ``register_commands``."""
