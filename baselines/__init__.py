"""Built-in plug-ins. Each module registers itself through the same public decorators a third party uses.

``bench.registry`` imports them on first use: ``fusion``, ``image`` and ``tabular`` (torch models) when a
model-side kind is asked for, ``metrics`` (numpy and scikit-learn only) when a metric is.
"""
