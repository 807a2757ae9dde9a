"""Cancel orders for jobs that have not reached the worker yet, remembered within a bound."""

from collections import OrderedDict


class PendingCancels:
    """The uids of the latest `capacity` cancel orders for jobs not running here.

    A cancel order can overtake its job's dispatch (they travel on different queues), so
    it is kept until that dispatch arrives, which is then dropped. The operator sends a
    cancel only to the worker a job was dispatched to, so a kept uid is normally taken
    within moments; the bound is for orders whose dispatch never comes (expired, or
    consumed before a restart), the oldest forgotten first.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._uids: OrderedDict[str, None] = OrderedDict()

    def add(self, uid: str) -> None:
        self._uids[uid] = None
        self._uids.move_to_end(uid)
        while len(self._uids) > self.capacity:
            self._uids.popitem(last=False)

    def take(self, uid: str) -> bool:
        """True once for a remembered uid, which is then forgotten."""
        if uid not in self._uids:
            return False
        del self._uids[uid]
        return True

    def __len__(self) -> int:
        return len(self._uids)
