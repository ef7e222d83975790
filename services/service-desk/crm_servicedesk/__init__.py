"""The service desk: tickets, SLA policies, satisfaction and reports."""
