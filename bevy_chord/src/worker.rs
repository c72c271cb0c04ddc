//! The inference thread: owns the [`Engine`], turns dialogue jobs into chat prompts, submits
//! everything pending, runs one step for all of them together, and forwards their events.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::time::Instant;

use bevy_ecs::entity::Entity;
use chord_engine::{
    Engine, EngineError, EngineOptions, Event, FinishReason, GenerateParams, SeqStats,
};
use chord_resources::tokenizer::ChatMessage;
use crossbeam_channel::{Receiver, Sender, TryRecvError};

/// One dialogue request as the worker receives it.
pub(crate) struct Job {
    pub id: u64,
    pub npc: Entity,
    pub persona: String,
    pub conversation: Vec<ChatMessage>,
    pub params: GenerateParams,
}

/// From the game to the worker.
pub(crate) enum Command {
    Submit(Box<Job>),
    /// Stop request `id`: dropped if still waiting, its event channel dropped if running (the
    /// engine then finishes and despawns the sequence at its next step that reaches it).
    Cancel(u64),
}

/// From the worker to the game.
pub(crate) enum Reply {
    Ready {
        n_ctx: usize,
        entities: u32,
    },
    LoadFailed(String),
    Token {
        id: u64,
        npc: Entity,
        token: u32,
        text: String,
    },
    Done {
        id: u64,
        npc: Entity,
        reason: FinishReason,
        stats: SeqStats,
    },
    Failed {
        id: u64,
        npc: Entity,
        error: String,
    },
    /// After every engine step, and whenever the worker goes idle (`seconds` = 0 then).
    Step {
        seconds: f64,
        active: usize,
        waiting: usize,
        entities: u32,
        /// Commands taken from the channel so far.
        handled: u64,
    },
}

/// A job turned into prompt tokens, waiting for a slot.
struct Prepared {
    id: u64,
    npc: Entity,
    ids: Vec<u32>,
    params: GenerateParams,
}

/// A job submitted to the engine.
struct Live {
    id: u64,
    npc: Entity,
    rx: chord_engine::EventReceiver,
    prefix: Option<String>,
}

struct Worker {
    engine: Engine,
    out: Sender<Reply>,
    max_active: usize,
    waiting: VecDeque<Prepared>,
    live: Vec<Live>,
    /// Persona → its rendered system turn (the shareable prompt prefix).
    personas: HashMap<String, String>,
    /// Prefixes whose K/V the engine has computed (and cached) already.
    warm: HashSet<String>,
    /// Prefix → the request computing it now; others with that prefix wait one prefill for it,
    /// then copy its K/V instead of computing it again in the same step.
    warming: HashMap<String, u64>,
    handled: u64,
}

/// Most personas remembered (rendered text, warm flags) before the memory is reset.
const MAX_PERSONAS: usize = 1024;

pub(crate) fn run(
    model: PathBuf,
    options: EngineOptions,
    max_active: usize,
    cmds: Receiver<Command>,
    out: Sender<Reply>,
) {
    let engine = match Engine::load_with(&model, options) {
        Ok(e) => e,
        Err(e) => {
            let error = e.to_string();
            let _ = out.send(Reply::LoadFailed(error.clone()));
            for cmd in cmds.iter() {
                if let Command::Submit(job) = cmd {
                    let _ = out.send(Reply::Failed {
                        id: job.id,
                        npc: job.npc,
                        error: error.clone(),
                    });
                }
            }
            return;
        }
    };
    let _ = out.send(Reply::Ready {
        n_ctx: engine.n_ctx(),
        entities: engine.entity_count(),
    });
    let mut w = Worker {
        engine,
        out,
        max_active: max_active.max(1),
        waiting: VecDeque::new(),
        live: Vec::new(),
        personas: HashMap::new(),
        warm: HashSet::new(),
        warming: HashMap::new(),
        handled: 0,
    };
    loop {
        if w.live.is_empty() && w.waiting.is_empty() && !w.engine.has_work() {
            w.report(0.0);
            // Nothing to do: sleep until the game asks for something (or goes away).
            match cmds.recv() {
                Ok(cmd) => w.handle(cmd),
                Err(_) => return,
            }
        }
        // Take everything the game sent since the last step, so it joins this step's batch.
        loop {
            match cmds.try_recv() {
                Ok(cmd) => w.handle(cmd),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            }
        }
        w.admit();
        if w.engine.has_work() {
            let t = Instant::now();
            w.engine.step();
            w.report(t.elapsed().as_secs_f64());
        }
        w.forward();
    }
}

impl Worker {
    fn report(&mut self, seconds: f64) {
        let _ = self.out.send(Reply::Step {
            seconds,
            active: self.engine.active_sequences(),
            waiting: self.waiting.len(),
            entities: self.engine.entity_count(),
            handled: self.handled,
        });
    }

    fn handle(&mut self, cmd: Command) {
        self.handled += 1;
        match cmd {
            Command::Submit(job) => {
                let (id, npc) = (job.id, job.npc);
                match self.prepare(*job) {
                    Ok(p) => self.waiting.push_back(p),
                    Err(e) => {
                        let _ = self.out.send(Reply::Failed {
                            id,
                            npc,
                            error: e.to_string(),
                        });
                    }
                }
            }
            Command::Cancel(id) => {
                self.waiting.retain(|p| p.id != id);
                // Dropping the receiver cancels the sequence inside the engine.
                self.live.retain(|l| l.id != id);
                self.warming.retain(|_, &mut w| w != id);
            }
        }
    }

    /// Render the chat prompt (persona as the system turn), tokenize it, and find the part
    /// that is the persona's alone: that part's K/V is shared by every request with it.
    fn prepare(&mut self, job: Job) -> Result<Prepared, EngineError> {
        let Job {
            id,
            npc,
            persona,
            mut conversation,
            mut params,
        } = job;
        let system = (!persona.is_empty()).then(|| ChatMessage::new("system", persona.clone()));
        let mut shared = None;
        if let Some(sys) = &system {
            if self.personas.len() >= MAX_PERSONAS {
                self.personas.clear();
                self.warm.clear();
            }
            if !self.personas.contains_key(&persona) {
                let text = self
                    .engine
                    .tokenizer()
                    .apply_chat_template(std::slice::from_ref(sys), false)?;
                self.personas.insert(persona.clone(), text);
            }
            shared = self.personas.get(&persona).cloned();
        }
        let n_ctx = self.engine.n_ctx();
        let (prompt, ids) = loop {
            let mut messages = Vec::with_capacity(conversation.len() + 1);
            messages.extend(system.iter().cloned());
            messages.extend(conversation.iter().cloned());
            let prompt = self.engine.render_chat(&messages)?;
            let ids = self.engine.tokenize(&prompt, false, true);
            // Forget the oldest turns (a user line and its reply) until the reply fits too.
            if ids.len() + params.max_new_tokens <= n_ctx || conversation.len() <= 1 {
                break (prompt, ids);
            }
            let n = 2.min(conversation.len() - 1);
            conversation.drain(..n);
        };
        params.add_special = false;
        params.parse_special = true;
        params.shared_prefix = shared.and_then(|s| {
            let n = common_prefix(&s, &prompt);
            (n > 0).then(|| s[..n].to_string())
        });
        Ok(Prepared {
            id,
            npc,
            ids,
            params,
        })
    }

    /// Submit waiting jobs while there is room, holding back those whose shared prefix another
    /// request is computing right now.
    fn admit(&mut self) {
        if self.live.is_empty() {
            self.warming.clear();
        }
        let mut held = VecDeque::new();
        while let Some(p) = self.waiting.pop_front() {
            if self.live.len() >= self.max_active {
                held.push_back(p);
                continue;
            }
            if let Some(prefix) = &p.params.shared_prefix {
                if self.warming.contains_key(prefix) {
                    held.push_back(p);
                    continue;
                }
                if !self.warm.contains(prefix) {
                    self.warming.insert(prefix.clone(), p.id);
                }
            }
            let prefix = p.params.shared_prefix.clone();
            match self.engine.submit(p.ids, &p.params) {
                Ok(rx) => self.live.push(Live {
                    id: p.id,
                    npc: p.npc,
                    rx,
                    prefix,
                }),
                Err(e) => {
                    self.warming.retain(|_, &mut w| w != p.id);
                    let _ = self.out.send(Reply::Failed {
                        id: p.id,
                        npc: p.npc,
                        error: e.to_string(),
                    });
                }
            }
        }
        self.waiting = held;
    }

    /// Pass every event on to the game; drop finished requests.
    fn forward(&mut self) {
        let mut i = 0;
        while i < self.live.len() {
            let mut finished = false;
            let mut started = false;
            let l = &self.live[i];
            for ev in l.rx.try_iter() {
                match ev {
                    Event::Token { id, text } => {
                        started = true;
                        let _ = self.out.send(Reply::Token {
                            id: l.id,
                            npc: l.npc,
                            token: id,
                            text,
                        });
                    }
                    Event::Done { reason, stats } => {
                        finished = true;
                        let _ = self.out.send(Reply::Done {
                            id: l.id,
                            npc: l.npc,
                            reason,
                            stats,
                        });
                        break;
                    }
                    Event::Logits { .. } => {}
                }
            }
            // The first event means the prompt (and so the prefix) has been evaluated.
            if (started || finished)
                && let Some(prefix) = &l.prefix
                && self.warming.get(prefix) == Some(&l.id)
            {
                self.warming.remove(prefix);
                self.warm.insert(prefix.clone());
            }
            if finished {
                self.live.swap_remove(i);
            } else {
                i += 1;
            }
        }
        if !self.engine.has_work() {
            // Every sequence sends Done before it goes; anything left has lost its result.
            for l in self.live.drain(..) {
                let _ = self.out.send(Reply::Failed {
                    id: l.id,
                    npc: l.npc,
                    error: EngineError::Disconnected.to_string(),
                });
            }
        }
    }
}

/// Length of the longest common prefix of `a` and `b`, on a character boundary.
fn common_prefix(a: &str, b: &str) -> usize {
    let mut n = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
    while !a.is_char_boundary(n) {
        n -= 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::common_prefix;

    #[test]
    fn common_prefix_stops_on_char_boundary() {
        assert_eq!(common_prefix("abc", "abd"), 2);
        assert_eq!(common_prefix("abc", "abc and more"), 3);
        assert_eq!(common_prefix("", "x"), 0);
        // 'é' and 'è' share their first UTF-8 byte.
        assert_eq!(common_prefix("aé", "aè"), 1);
    }
}
