"""The platform side of postedge (docs/central-contract.md): what a gateway
talks to above the outlet. One HTTPS front (``front.py``) over one backend
interface (``backend.py``); the embedded SQLite backend (``embedded.py``)
needs nothing else, for the demo and a county pilot. The platform alone holds
the master key (``keys.py``)."""
