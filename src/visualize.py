"""Draw what a trained network sees:
`python src/visualize.py ckpt_path=logs/.../last.ckpt method=gradcam input=photos/`.

Methods: deconvnet, guided_backprop, occlusion, gradcam, filters, feature_maps. Writes PNGs to
the run directory (logs/visualize/runs/<time>/) and, with logger=wandb|tensorboard, logs them.
"""

from classicnets.cli import visualize_main

if __name__ == "__main__":
    visualize_main()
