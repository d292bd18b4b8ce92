-- spendguard schema, version 9: process heartbeats. A released migration is never edited: change the
-- schema by adding a file with the next number.
--
-- Every process sharing the database beats here every few seconds (its guard's process id, its last
-- beat). A reservation names its process in its `pending` attribution (`pending->>'holder'`), so the
-- reservation functions stay as they are; the reservations of a process whose beat stopped are
-- charged at their estimate by any live process (settleDeadProcesses), through the claiming settle of
-- migration 2 like the TTL sweep's, so that instances sweeping at once charge each one once.
CREATE TABLE @schema@.processes (
  id text PRIMARY KEY,
  heartbeat_at timestamptz NOT NULL
);
