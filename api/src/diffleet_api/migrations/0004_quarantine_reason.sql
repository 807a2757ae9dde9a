-- Why the API's job watcher set a job aside (api/src/diffleet_api/isolation.py): handling
-- it failed by a fault of its own, so its history says why; null for every other job.
alter table jobs add column quarantine_reason text;
