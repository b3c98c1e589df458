"""icibenefit: predicts durable clinical benefit of anti-PD-1/PD-L1 therapy in NSCLC.

The package root holds only what every part shares: settings, errors, domain
types, privacy helpers and the command line.  The working parts live in the
subpackages ``listener``, ``fhir``, ``pipeline``, ``model_store``, ``training``
and ``reporting``.
"""

__version__ = "0.1.0"
