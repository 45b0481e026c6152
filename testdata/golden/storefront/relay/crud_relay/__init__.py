"""crud-relay: PostgreSQL logical decoding (pgoutput) → Redis Streams, exactly once.

PostgreSQL delivers each committed change at least once (from the slot's confirmed position);
the relay writes it with a stream id derived from its commit position, so a replayed change
is refused by Redis instead of stored twice, and it confirms a position to PostgreSQL only
after Redis has every change up to it.
"""
