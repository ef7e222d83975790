"""Contact and company records: the aggregate, its commands, read models, REST edges and timers."""
