"""The sales service: from first interest to pro-forma invoice, and what each customer is worth."""
