"""Interest migration over time: readable interest profiles, migration detection, evolution forecast.

    topics.py     the interest space: catalogue categories, or named k-means topics of item text vectors
    profiles.py   histories in time order, timelines of topic shares, long/short-term profiles
    detection.py  MigrationDetector (online score + calibrated alarms), OfflineChangePointDetector (ruptures)
    forecast.py   MarkovForecaster: next period's topic distribution
    plots.py      interest timeline (stacked topic shares, migrations marked)
    report.py     one user's report: profile and migrations with the topics before/after (Migration,
                  describe, user_report), load_space (histories, topics, detector vectors of a data set)

The `migrec interests` command is migrec.cli.interests (the library never imports the command line).
"""
from .detection import MigrationDetector, OfflineChangePointDetector
from .forecast import MarkovForecaster
from .profiles import History, InterestProfile, interest_profile, item_factors, timeline, user_histories
from .report import Migration, describe, load_space, migrations, user_report
from .topics import TextTopics, TopicSpace, category_topics, name_topics, topic_space

__all__ = ["MigrationDetector", "OfflineChangePointDetector", "MarkovForecaster", "History", "InterestProfile",
           "interest_profile", "item_factors", "timeline", "user_histories", "TextTopics", "TopicSpace",
           "category_topics", "name_topics", "topic_space", "Migration", "describe", "load_space", "migrations",
           "user_report"]
