from classicnets.data.datamodule import ImageDataModule
class HuggingFaceDataModule(ImageDataModule):
    pass
def describe(cfg): raise NotImplementedError
