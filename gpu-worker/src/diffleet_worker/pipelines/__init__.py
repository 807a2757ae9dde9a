"""One module per task (txt2img, img2img, inpaint), each with one `run()`; the shared
pieces (the Generation request, scheduler choice, memory options) are in common.py."""
