"""One outlet from one description: ``OUTLET.toml`` says what the
outlet is (its lockers with their boards and compartments, its scanners and
handhelds, the counter's peripherals, the central service); ``init`` turns it
into every file the outlet runs on, on top of ``gateway/provision.py``;
``check`` says what is missing; ``devices`` adds and retires devices later.

The functions here return facts (paths, message keys with their values); the
command line (``postedge/outlet_cmd.py``) says them in the clerk's language."""
