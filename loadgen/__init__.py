"""A distributed OCPP load tester: simulated charging stations on Locust.

Importing this package is cheap and does not import gevent or Locust: ``csms_stub`` and the
pure protocol code share it.
"""

__version__ = "0.1.0"
