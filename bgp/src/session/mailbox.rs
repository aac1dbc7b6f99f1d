//! What the speaker's handles and a session task share: the commands and encoded messages
//! waiting for the task, the state the handles read, and who waits for room.
//!
//! One small allocation per session, in place of a command channel, an outbound channel and a
//! state `watch`: tokio's channels allocate a block of 32 slots each up front (and a second
//! block once a queue wraps), which at 999 peers was ~4 MiB of a route reflector's peak heap,
//! and a speaker waiting for room needed a task per blocked peer (issue 12). The queues here
//! hold memory only while something waits in them.

use super::{Command, PeerId, SessionError};
use crate::fsm::State;
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use tokio::sync::{Notify, mpsc};

/// The shared part of one session.
pub(super) struct Mailbox {
    inner: Mutex<Inner>,
    /// Wakes the task: a command or a message came, or the last handle went.
    wake: Notify,
    /// Wakes `send`ers waiting for room.
    room: Notify,
    /// Most encoded messages queued at once.
    capacity: usize,
}

struct Inner {
    commands: VecDeque<Command>,
    /// Messages for the current Established period; emptied whenever the session leaves it,
    /// so nothing queued for one connection is sent on the next.
    outbound: VecDeque<Bytes>,
    state: State,
    /// Live [`SessionHandle`](super::SessionHandle)s; at zero the task stops.
    handles: usize,
    /// The task has ended: nothing is taken any more.
    ended: bool,
    /// Told this session's id once `outbound` has room (see [`Mailbox::notify_room`]).
    waiter: Option<(PeerId, mpsc::UnboundedSender<PeerId>)>,
}

impl Mailbox {
    pub(super) fn new(capacity: usize) -> Mailbox {
        Mailbox {
            inner: Mutex::new(Inner {
                commands: VecDeque::new(),
                outbound: VecDeque::new(),
                state: State::Idle,
                handles: 1,
                ended: false,
                waiter: None,
            }),
            wake: Notify::new(),
            room: Notify::new(),
            capacity,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing panics while holding it; a poisoned lock still holds consistent queues.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    // The handles' side.

    pub(super) fn handle_cloned(&self) {
        self.lock().handles += 1;
    }

    pub(super) fn handle_dropped(&self) {
        let last = {
            let mut inner = self.lock();
            inner.handles -= 1;
            inner.handles == 0
        };
        if last {
            self.wake.notify_one();
        }
    }

    /// Queues a command; false if the task has ended.
    pub(super) fn command(&self, cmd: Command) -> bool {
        {
            let mut inner = self.lock();
            if inner.ended {
                return false;
            }
            inner.commands.push_back(cmd);
        }
        self.wake.notify_one();
        true
    }

    pub(super) fn state(&self) -> State {
        self.lock().state
    }

    /// Queues an encoded message for the current Established period if there is room.
    pub(super) fn try_send(&self, msg: Bytes) -> Result<(), SessionError> {
        {
            let mut inner = self.lock();
            if inner.ended {
                return Err(SessionError::Closed);
            }
            if inner.state != State::Established {
                return Err(SessionError::NotEstablished);
            }
            if inner.outbound.len() >= self.capacity {
                return Err(SessionError::Full);
            }
            inner.outbound.push_back(msg);
        }
        self.wake.notify_one();
        Ok(())
    }

    /// [`Mailbox::try_send`], waiting while the queue is full.
    pub(super) async fn send(&self, msg: Bytes) -> Result<(), SessionError> {
        loop {
            // Registered before the check, so room made in between is not missed.
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.try_send(msg.clone()) {
                Err(SessionError::Full) => room.await,
                res => return res,
            }
        }
    }

    /// Reports `id` on `ready` once the outbound queue has room: at once if it has (or the
    /// session is no longer Established, or has ended), else when the task next takes it.
    /// One report per call; a later call replaces an earlier waiter.
    pub(super) fn notify_room(&self, id: PeerId, ready: &mpsc::UnboundedSender<PeerId>) {
        let mut inner = self.lock();
        let full = !inner.ended
            && inner.state == State::Established
            && inner.outbound.len() >= self.capacity;
        if full {
            inner.waiter = Some((id, ready.clone()));
        } else {
            drop(inner);
            let _ = ready.send(id);
        }
    }

    // The task's side.

    /// Resolves when a handle has left something (or the last handle went) since the task last
    /// looked; a wake while the task was busy is kept for its next wait.
    pub(super) async fn woken(&self) {
        self.wake.notified().await
    }

    pub(super) fn take_command(&self) -> Option<Command> {
        self.lock().commands.pop_front()
    }

    /// Every handle is gone.
    pub(super) fn orphaned(&self) -> bool {
        self.lock().handles == 0
    }

    /// Everything queued for the peer, in order; the queue is left empty (with no allocation),
    /// and whoever waits for room is told.
    pub(super) fn take_outbound(&self) -> VecDeque<Bytes> {
        let (batch, waiter) = {
            let mut inner = self.lock();
            if inner.outbound.is_empty() {
                return VecDeque::new();
            }
            (std::mem::take(&mut inner.outbound), inner.waiter.take())
        };
        self.made_room(waiter);
        batch
    }

    /// The state the handles see. Leaving Established drops what was queued for it.
    pub(super) fn set_state(&self, state: State) {
        let (dropped, waiter) = {
            let mut inner = self.lock();
            inner.state = state;
            if state == State::Established {
                return;
            }
            let dropped = std::mem::take(&mut inner.outbound);
            (dropped, inner.waiter.take())
        };
        drop(dropped);
        self.made_room(waiter);
    }

    /// The task ended: later commands and messages are refused, and nobody waits for room.
    pub(super) fn end(&self) {
        let (outbound, commands, waiter) = {
            let mut inner = self.lock();
            inner.ended = true;
            (
                std::mem::take(&mut inner.outbound),
                std::mem::take(&mut inner.commands),
                inner.waiter.take(),
            )
        };
        // Dropped outside the lock: a dropped command may complete a shutdown's reply.
        drop((outbound, commands));
        self.made_room(waiter);
    }

    fn made_room(&self, waiter: Option<(PeerId, mpsc::UnboundedSender<PeerId>)>) {
        self.room.notify_waiters();
        if let Some((id, ready)) = waiter {
            let _ = ready.send(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(n: u8) -> Bytes {
        Bytes::from(vec![n])
    }

    #[test]
    fn messages_wait_only_for_an_established_session_and_go_when_it_leaves() {
        let m = Mailbox::new(2);
        assert_eq!(m.try_send(msg(1)), Err(SessionError::NotEstablished));
        m.set_state(State::Established);
        m.try_send(msg(1)).unwrap();
        m.try_send(msg(2)).unwrap();
        assert_eq!(m.try_send(msg(3)), Err(SessionError::Full));
        assert_eq!(m.take_outbound(), [msg(1), msg(2)]);
        m.try_send(msg(3)).unwrap();
        // Down, then up again: nothing of the old period is left.
        m.set_state(State::Idle);
        m.set_state(State::Established);
        assert!(m.take_outbound().is_empty());
        m.end();
        assert_eq!(m.try_send(msg(4)), Err(SessionError::Closed));
    }

    #[test]
    fn a_waiter_for_room_is_told_once_when_the_task_takes_the_queue() {
        let m = Mailbox::new(1);
        let (ready, mut rx) = mpsc::unbounded_channel();
        m.notify_room(7, &ready);
        assert_eq!(rx.try_recv(), Ok(7), "not Established: told at once");
        m.set_state(State::Established);
        m.try_send(msg(1)).unwrap();
        m.notify_room(7, &ready);
        assert!(rx.try_recv().is_err(), "full: waits");
        assert_eq!(m.take_outbound().len(), 1);
        assert_eq!(rx.try_recv(), Ok(7));
        assert!(m.take_outbound().is_empty());
        assert!(rx.try_recv().is_err(), "told once");
        // The task ending also tells a waiter.
        m.try_send(msg(2)).unwrap();
        m.notify_room(7, &ready);
        m.end();
        assert_eq!(rx.try_recv(), Ok(7));
    }

    #[test]
    fn the_last_handle_gone_wakes_the_task() {
        let m = Mailbox::new(1);
        m.handle_cloned();
        m.handle_dropped();
        assert!(!m.orphaned());
        m.handle_dropped();
        assert!(m.orphaned());
        assert!(m.command(Command::BfdDown));
        assert!(matches!(m.take_command(), Some(Command::BfdDown)));
        m.end();
        assert!(!m.command(Command::BfdDown), "refused once the task ended");
    }

    /// Every peer holds one from its start, however idle (issue 12): two tokio channels and a
    /// watch were ~3 KiB with their first blocks.
    #[test]
    fn a_mailbox_is_small_and_holds_no_queue_while_idle() {
        let size = std::mem::size_of::<Mailbox>();
        eprintln!("Mailbox {size} B");
        assert!(size <= 256, "a mailbox is {size} B");
        let m = Mailbox::new(32);
        m.set_state(State::Established);
        m.try_send(msg(1)).unwrap();
        drop(m.take_outbound());
        assert_eq!(
            m.lock().outbound.capacity(),
            0,
            "the queue's allocation went with it"
        );
    }

    #[tokio::test]
    async fn a_sender_waits_for_room() {
        let m = std::sync::Arc::new(Mailbox::new(1));
        m.set_state(State::Established);
        m.try_send(msg(1)).unwrap();
        let sender = {
            let m = m.clone();
            tokio::spawn(async move { m.send(msg(2)).await })
        };
        tokio::task::yield_now().await;
        assert!(!sender.is_finished());
        assert_eq!(m.take_outbound(), [msg(1)]);
        assert_eq!(sender.await.unwrap(), Ok(()));
        assert_eq!(m.take_outbound(), [msg(2)]);
    }
}
