"""The training order: one process and N processes see the same global city-by-city batches."""
import numpy as np
import pytest

from dataloaders.samplers import CityShuffleSampler

CITY_OF_PLACE = np.repeat([0, 1, 2, 3], [9, 14, 6, 8])  # 37 places: the last batch of 8 is partial


def steps(sampler: CityShuffleSampler, per_step: int) -> list[list[int]]:
    """The sampler's indices cut into the loader's batches of ``per_step``."""
    order = list(sampler)
    return [order[i:i + per_step] for i in range(0, len(order), per_step)]


@pytest.mark.parametrize("world", [2, 4])
def test_processes_take_disjoint_slices_of_the_single_process_batches(world):
    batch = 8
    single = CityShuffleSampler(CITY_OF_PLACE, seed=3, batch_size=batch)
    ranks = [CityShuffleSampler(CITY_OF_PLACE, seed=3, batch_size=batch, num_replicas=world, rank=r)
             for r in range(world)]
    for epoch in (0, 1):
        for s in [single, *ranks]:
            s.set_epoch(epoch)
        one = steps(single, batch)
        many = [steps(s, batch // world) for s in ranks]
        assert len({len(m) for m in many}) == 1 and len(many[0]) == len(one)  # same number of steps
        for step, places in enumerate(one):
            union = [p for m in many for p in m[step]]
            # rank r holds the r-th slice of the step's places; the last step drops len % world places
            assert union == places[:len(places) - len(places) % world]
        assert all(len(s) == len(list(s)) for s in ranks)
    assert single.global_order().tolist() != CityShuffleSampler(CITY_OF_PLACE, seed=4).global_order().tolist()


def test_city_by_city_order_depends_only_on_seed_and_epoch():
    a, b = CityShuffleSampler(CITY_OF_PLACE, seed=0), CityShuffleSampler(CITY_OF_PLACE, seed=0)
    a.set_epoch(5)
    list(a)  # drawing does not advance anything
    b.set_epoch(5)
    assert list(a) == list(b)
    assert np.all(np.diff(CITY_OF_PLACE[list(a)]) >= 0)
    a.set_epoch(6)
    assert list(a) != list(b)


def test_resume_skips_the_global_batches_already_trained_in_that_epoch():
    full = CityShuffleSampler(CITY_OF_PLACE, seed=1, batch_size=8, num_replicas=2, rank=1)
    resumed = CityShuffleSampler(CITY_OF_PLACE, seed=1, batch_size=8, num_replicas=2, rank=1)
    resumed.resume(epoch=2, batches_done=3)
    for s in (full, resumed):
        s.set_epoch(2)
    assert list(resumed) == list(full)[3 * 4:]
    assert len(resumed) == len(full)  # Lightning counts the epoch's batches from the full length
    for s in (full, resumed):
        s.set_epoch(3)
    assert list(resumed) == list(full)  # later epochs are whole


@pytest.mark.parametrize("batch_size, world", [(7, 2), (1, 2)])
def test_batch_that_does_not_split_across_processes_is_refused(batch_size, world):
    with pytest.raises(ValueError, match="split evenly across"):
        CityShuffleSampler(CITY_OF_PLACE, batch_size=batch_size, num_replicas=world, rank=0)


def test_epochs_reach_the_dataset_from_the_start_epoch_on():
    seen = []
    sampler = CityShuffleSampler(CITY_OF_PLACE, seed=0, epoch=2, on_set_epoch=seen.append)
    assert sampler.epoch == 2 and seen == [2]  # a resumed run's first epoch, before Lightning calls set_epoch
    first = sampler.global_order().tolist()
    sampler.set_epoch(3)
    assert seen == [2, 3] and sampler.global_order().tolist() != first
