"""crmkit: the chassis every CRM service stands on.

Event store and outbox publisher (write side), projector runner (read side), the
CloudEvents envelope, the Flask app factory and gRPC bootstrap (edges), configuration,
logs, metrics, the local stack and the `crm` command. Nothing here knows any one
service: services describe themselves with a `crmkit.service.ServiceSpec`.
"""
