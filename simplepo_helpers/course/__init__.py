"""Course tooling: exercise checks with hints, notebook display helpers and widgets, and the headless
notebook runner (``make run``). May import anything in the kit; nothing in the kit imports it."""
