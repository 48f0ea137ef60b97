"""The web app (``bufferanytime app``): a Gradio page that runs the per-frame prior and the video model on an
uploaded clip or the bundled synthetic example, and shows and offers for download what the command line writes.
``work`` does a request without any web framework; ``ui`` builds the page, its queue, limits and clean-up.
"""
