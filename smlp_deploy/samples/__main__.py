"""``python -m smlp_deploy.samples``: the folder of the bundled photographs, for commands that take images
(``smlp-predict MODEL "$(python -m smlp_deploy.samples)"``)."""

from . import sample_images

if __name__ == "__main__":
    print(sample_images()[0].parent)
