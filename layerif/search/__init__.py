"""The whole-model allocation search (method `search`): the ladder of levels, the level
database, the fitness with cached block inputs, the evolution and the run that ties them."""

from .database import LevelDatabase
from .evolution import EvolutionSettings, evolve
from .fitness import HeldText, WholeModelFitness, held_text
from .ladder import Ladder, deviation, mutate
from .run import SearchJob, search_allocation, search_workspace

__all__ = ["EvolutionSettings", "HeldText", "Ladder", "LevelDatabase", "SearchJob",
           "WholeModelFitness", "deviation", "evolve", "held_text", "mutate",
           "search_allocation", "search_workspace"]
