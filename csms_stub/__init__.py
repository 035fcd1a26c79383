"""csms_stub: a small OCPP 1.6 / 2.0.1 / 2.1 CSMS with a database and an HTTP API.

Run it with ``python -m csms_stub``; embed it with :class:`csms_stub.app.Stub`.
"""
