"""The messaging service: every outbound contact with the customer, consent checked at send time."""
