"""The lessons' setup: what every notebook loads first (``load_profile``) and the tuned values it trains with
(``PROFILE_DEFAULTS``). ``simplepo_helpers.scale.profiles`` is the old name of ``profiles`` and still imports."""
