"""Small seeded cases of each built-in setting, shared by the setting tests:
``(setting, tasks, batch)`` drawn from one stream."""

from rational_icl.data import CategoricalSequence, Classification, LinearRegression, generator


def categorical(seed, num_tasks=5, batch=3, length=9):
    setting = CategoricalSequence(num_dims=4, context_length=length)
    gen = generator(seed, "test")
    tasks = setting.sample_tasks(num_tasks, gen)
    return setting, tasks, setting.sample_batch(tasks, batch, gen)


def regression(seed, num_tasks=5, batch=3, length=7):
    setting = LinearRegression(num_dims=3, context_length=length, noise_variance=0.25)
    gen = generator(seed, "test")
    tasks = setting.sample_tasks(num_tasks, gen)
    return setting, tasks, setting.sample_batch(tasks, batch, gen)


def classification(seed, num_tasks=6, batch=4, length=8):
    setting = Classification(num_dims=4, context_length=length, within_class_variance=0.5)
    gen = generator(seed, "test")
    tasks = setting.sample_tasks(num_tasks, gen)
    return setting, tasks, setting.sample_batch(tasks, batch, gen)
