"""Corpora: download and prepare public data sets into manifests (`astctc download|prepare <corpus>`).

The core (astctc/data, features, train, models) names no corpus; everything corpus-specific lives here."""
