-- The Queued jobs by tier and queue time: queue positions (GET /v1/jobs) and the fleet's
-- per-tier counts (GET /v1/fleet, polled by the console) read only these rows, a few
-- among the whole history.
create index jobs_queued on jobs ((status->>'tier'), (status->>'queuedAt')) where phase = 'Queued';
