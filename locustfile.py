"""``locust -f locustfile.py --host ws://csms:9000 --users 500``: one charging station per
user. Options: ``locust -f locustfile.py --help`` (group "OCPP load generator")."""

from loadgen.locust import ChargerUser

__all__ = ["ChargerUser"]
