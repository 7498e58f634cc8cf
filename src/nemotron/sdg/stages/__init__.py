"""The stage kinds of the Nemotron-4 340B recipe, by the name a pipeline config uses."""
from nemotron.sdg.stages.base import Models, Stage, StageInputError, Unit, UnitContext, derive_seed
from nemotron.sdg.stages.conversation import Dialogues, InstructionFollowing, Responses, TwoTurn
from nemotron.sdg.stages.filler import strip_polite_filler
from nemotron.sdg.stages.preference import Preference, parse_verdict
from nemotron.sdg.stages.problems import Classify, Problems, parse_yes_no
from nemotron.sdg.stages.prompts import ClosedQA, MacroTopics, OpenQuestions, Revise, Seeds, Subtopics, WritingTasks

STAGE_KINDS: dict[str, type[Stage]] = {cls.kind: cls for cls in (
    Seeds, MacroTopics, Subtopics, OpenQuestions, WritingTasks, Revise, ClosedQA, Classify, Problems,
    InstructionFollowing, TwoTurn, Responses, Dialogues, Preference,
)}

__all__ = ["STAGE_KINDS", "Models", "Stage", "StageInputError", "Unit", "UnitContext", "derive_seed",
           "parse_verdict", "parse_yes_no", "strip_polite_filler"]
