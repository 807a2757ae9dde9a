-- The namespace of a delivery's job: an API whose watcher follows some namespaces sends
-- only their webhooks (one following all sends every delivery, these included).
alter table webhook_deliveries add column namespace text;
update webhook_deliveries d set namespace = j.namespace from jobs j where j.uid = d.job_uid;
