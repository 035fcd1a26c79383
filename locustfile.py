"""``locust -f locustfile.py --host ws://csms:9000 --users 500``: one charging station per
user. Our options: ``python -m loadgen options`` (Locust's ``--help`` lists only its own:
it prints them before it imports this file), or the web UI's "Custom parameters"."""

from loadgen.locust import ChargerUser

__all__ = ["ChargerUser"]
