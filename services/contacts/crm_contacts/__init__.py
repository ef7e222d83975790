"""The contacts service: people, companies, and the customer record's full history."""
