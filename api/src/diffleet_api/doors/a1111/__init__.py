"""The Automatic1111 web UI API (`/sdapi/v1`) as a door: its txt2img and img2img requests
become GenerationJobs of the caller's tenant (same submission as `POST /v1/jobs`), waited
for and answered as A1111 answers (`{images, parameters, info}`).

A1111 clients send many fields with their default, no-op values (webuiapi sends them
all): those are accepted. A field that asks for something diffleet does not do is a 422
naming it (`refusals`); fields A1111 does not have are ignored, as A1111 ignores them.

Its modules: `schemas` (A1111's requests and answers), `refusals`, `sampling` (A1111's
sampler and scheduler names), `checkpoints` (the tenant's checkpoints, the caller's
default one and the options that set it), `translation` (a request as a
GenerationJobSpec), `images` (its base64 images, an inpaint's mask and init image),
`generation` (txt2img and img2img: submit, wait, answer), `answers` (`parameters`,
`info`), `running` (progress with live previews, interrupt), `errors` (A1111's error
shape, fields by A1111's names).
"""

DOOR = "a1111"  # the door's label on its jobs, and its rows of door_options
