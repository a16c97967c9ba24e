"""``python -m clients.probe.judges``: scores, published figures, training (`validation.main`)."""

from clients.probe.judges.validation import main

raise SystemExit(main())
