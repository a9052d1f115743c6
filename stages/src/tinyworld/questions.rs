//! The question bank behind `chat` and `prompts`: every question the world can answer
//! ([`Question`]), its phrasings, its ideal response and, where there is one, its short
//! checkable answer. A seeded quarter of the questions is held out for `prompts` (evaluation);
//! a seeded fifth of the rest are RLHF questions, never shown answered in `chat`; the rest
//! become `chat` conversations. `rl-prompts` (sampling, ranking and PPO) asks the RLHF and the
//! chat questions, never a held-out one.

use super::rng::Rng;
use super::text::{N_SUBJECTS, PERSON_FACTS, person_fact, word_problem_add, word_problem_sub};
use super::world::*;

/// Percent of questions held out of `chat` for `prompts`.
const HELD_OUT_PERCENT: u32 = 25;
/// Percent of the questions not held out that go to `rl-prompts` instead of `chat`.
const RL_PERCENT: u32 = 20;
/// Percent of chat questions asked a second time, in another phrasing.
const SECOND_PHRASING_PERCENT: u32 = 50;

#[derive(Clone, Copy, Debug)]
pub(crate) enum Question {
    ObjColour {
        p: usize,
        o: usize,
    },
    HasObject {
        p: usize,
        o: usize,
    },
    /// The colour of something the person does not have: the answer says so.
    MissingObject {
        p: usize,
        o: usize,
    },
    Lives {
        p: usize,
    },
    PetKind {
        p: usize,
    },
    PetName {
        p: usize,
    },
    Count {
        p: usize,
    },
    Age {
        p: usize,
    },
    FavColour {
        p: usize,
    },
    FavFood {
        p: usize,
    },
    Friend {
        p: usize,
    },
    Landmark {
        place: usize,
    },
    Sound {
        animal: usize,
    },
    Legs {
        animal: usize,
    },
    ThingColour {
        thing: usize,
    },
    Add {
        x: u32,
        y: u32,
    },
    Sub {
        x: u32,
        y: u32,
    },
    After {
        n: u32,
    },
    Before {
        n: u32,
    },
    CountUp {
        from: u32,
        to: u32,
    },
    WordAdd {
        subject: usize,
        x: u32,
        y: u32,
        item: usize,
    },
    WordSub {
        subject: usize,
        x: u32,
        y: u32,
        item: usize,
    },
    Greeting {
        i: usize,
    },
    Thanks {
        i: usize,
    },
    Bye {
        i: usize,
    },
    About {
        p: usize,
    },
    AboutTown {
        place: usize,
    },
    Story {
        p: usize,
    },
    /// A question about someone who is not in the world.
    Stranger {
        name: &'static str,
        what: usize,
    },
}

const GREETINGS: &[(&str, &str)] = &[
    ("Hello!", "Hello! How can I help you today?"),
    ("Hi!", "Hi! How can I help you today?"),
    ("Hi there!", "Hi there! How can I help you today?"),
    ("Hello there!", "Hello there! How can I help you today?"),
    ("Hey!", "Hello! How can I help you today?"),
    ("Good morning!", "Good morning! How can I help you today?"),
    ("Good afternoon!", "Good afternoon! How can I help you today?"),
    ("Good evening!", "Good evening! How can I help you today?"),
    ("Hello, how are you?", "Hello! I am very well, thank you. How can I help you today?"),
    ("Hi, how are you today?", "Hi! I am very well, thank you. How can I help you today?"),
    ("How are you?", "I am very well, thank you for asking. How can I help you today?"),
    (
        "Good morning, how are you?",
        "Good morning! I am very well, thank you. How can I help you today?",
    ),
];

const THANKS: &[(&str, &str)] = &[
    ("Thank you!", "You are welcome! I am happy to help."),
    ("Thanks!", "You are welcome! I am happy to help."),
    ("Thank you very much!", "You are very welcome! I am happy to help."),
    ("Thanks a lot!", "You are welcome! I am happy to help."),
    ("Thanks for your help!", "You are welcome! I am glad I could help."),
    ("Thank you for helping me.", "You are welcome! I am glad I could help."),
    ("That was helpful, thank you.", "You are welcome! I am glad it helped."),
    ("Thank you so much!", "You are very welcome! I am happy to help."),
];

const BYES: &[(&str, &str)] = &[
    ("Goodbye!", "Goodbye! Have a nice day!"),
    ("Bye!", "Bye! Have a nice day!"),
    ("See you later!", "See you later! Have a nice day!"),
    ("Bye for now!", "Bye for now! Have a nice day!"),
    ("Good night!", "Good night! Sleep well!"),
    ("I have to go now. Goodbye!", "Goodbye! Have a nice day!"),
];

const STRANGER_QUESTIONS: &[&str] =
    &["Where does {S} live?", "How old is {S}?", "What pet does {S} have?"];

/// Every question this world can be asked, in a fixed order.
pub(crate) fn all(w: &World, seed: u64) -> Vec<Question> {
    use Question::*;
    let mut r = Rng::fork(seed, "questions");
    let mut qs = Vec::new();
    for p in 0..w.people.len() {
        let person = &w.people[p];
        for &(o, _) in &person.objects {
            qs.push(ObjColour { p, o });
            qs.push(HasObject { p, o });
        }
        let missing: Vec<usize> =
            (0..OBJECTS.len()).filter(|&o| w.colour_of(p, o).is_none()).collect();
        for o in r.sample(&missing, 2) {
            qs.push(HasObject { p, o });
            qs.push(MissingObject { p, o });
        }
        qs.extend([
            Lives { p },
            PetKind { p },
            PetName { p },
            Count { p },
            Age { p },
            FavColour { p },
            FavFood { p },
            Friend { p },
            About { p },
            Story { p },
        ]);
    }
    for place in 0..w.places.len() {
        qs.push(Landmark { place });
        qs.push(AboutTown { place });
    }
    for (animal, a) in ANIMALS.iter().enumerate() {
        qs.push(Sound { animal });
        if a.legs > 0 {
            qs.push(Legs { animal });
        }
    }
    qs.extend((0..THING_COLOURS.len()).map(|thing| ThingColour { thing }));
    for x in 0..=MAX_OPERAND {
        for y in 0..=MAX_OPERAND {
            qs.push(Add { x, y });
            if y <= x {
                qs.push(Sub { x, y });
            }
        }
    }
    for n in 0..MAX_COUNT {
        qs.push(After { n });
        qs.push(Before { n: n + 1 });
    }
    for from in 1..=20 {
        for len in [3, 5] {
            qs.push(CountUp { from, to: from + len - 1 });
        }
    }
    for x in 3..=12 {
        for y in 1..=9 {
            qs.push(WordAdd {
                subject: r.below(N_SUBJECTS),
                x,
                y,
                item: r.below(COUNTABLES.len()),
            });
            if y + 2 <= x {
                qs.push(WordSub {
                    subject: r.below(N_SUBJECTS),
                    x,
                    y,
                    item: r.below(COUNTABLES.len()),
                });
            }
        }
    }
    qs.extend((0..GREETINGS.len()).map(|i| Greeting { i }));
    qs.extend((0..THANKS.len()).map(|i| Thanks { i }));
    qs.extend((0..BYES.len()).map(|i| Bye { i }));
    for &name in &w.strangers {
        qs.push(Stranger { name, what: r.below(STRANGER_QUESTIONS.len()) });
    }
    qs
}

/// The bank split three ways; no question is in two of them.
pub(crate) struct Split {
    /// Fine-tuning conversations.
    pub chat: Vec<Question>,
    /// Questions for the RLHF stages only (sample, rank, ppo), not in `chat`.
    pub rl: Vec<Question>,
    /// Held-out evaluation prompts.
    pub held: Vec<Question>,
}

/// Splits the bank. The held-out draw is made first and from its own stream, so the
/// evaluation set does not depend on how the rest is divided.
pub(crate) fn split(w: &World, seed: u64) -> Split {
    let mut held_r = Rng::fork(seed, "held-out");
    let mut rl_r = Rng::fork(seed, "rl");
    let mut s = Split { chat: Vec::new(), rl: Vec::new(), held: Vec::new() };
    for q in all(w, seed) {
        if held_r.percent(HELD_OUT_PERCENT) {
            s.held.push(q);
        } else if rl_r.percent(RL_PERCENT) {
            s.rl.push(q);
        } else {
            s.chat.push(q);
        }
    }
    s
}

/// Requests ("Can you ...?") are answered with a friendly "Sure!" first.
fn is_request(phrasing: &str) -> bool {
    ["Can you ", "Could you ", "Please "].iter().any(|p| phrasing.starts_with(p))
}

impl Question {
    /// Ways a user asks it.
    pub(crate) fn phrasings(&self, w: &World) -> Vec<String> {
        use Question::*;
        let name = |p: usize| w.people[p].name;
        let fill = |templates: &[&str], p: usize| -> Vec<String> {
            templates.iter().map(|t| t.replace("{P}", name(p))).collect()
        };
        match *self {
            ObjColour { p, o } => {
                let o = OBJECTS[o];
                let n = name(p);
                vec![
                    format!("What colour is {n}'s {o}?"),
                    format!("Can you tell me the colour of {n}'s {o}?"),
                    format!("What colour is the {o} that {n} has?"),
                ]
            }
            HasObject { p, o } => {
                let n = name(p);
                vec![
                    format!("Does {n} have {}?", a(OBJECTS[o])),
                    format!("Has {n} got {}?", a(OBJECTS[o])),
                ]
            }
            MissingObject { p, o } => vec![format!("What colour is {}'s {}?", name(p), OBJECTS[o])],
            Lives { p } => fill(
                &[
                    "Where does {P} live?",
                    "Which town does {P} live in?",
                    "Can you tell me where {P} lives?",
                ],
                p,
            ),
            PetKind { p } => {
                fill(&["What pet does {P} have?", "What kind of animal is {P}'s pet?"], p)
            }
            PetName { p } => {
                let k = ANIMALS[w.people[p].pet_kind].kind;
                let n = name(p);
                vec![
                    format!("What is the name of {n}'s {k}?"),
                    format!("What is {n}'s {k} called?"),
                ]
            }
            Count { p } => {
                let items = COUNTABLES[w.people[p].countable].1;
                let n = name(p);
                vec![
                    format!("How many {items} does {n} have?"),
                    format!("Can you tell me how many {items} {n} has?"),
                ]
            }
            Age { p } => fill(&["How old is {P}?", "What is {P}'s age?"], p),
            FavColour { p } => {
                fill(&["What is {P}'s favourite colour?", "Which colour does {P} like best?"], p)
            }
            FavFood { p } => {
                fill(&["What is {P}'s favourite food?", "What food does {P} like best?"], p)
            }
            Friend { p } => {
                fill(&["Who is {P}'s best friend?", "Who is the best friend of {P}?"], p)
            }
            Landmark { place } => {
                let x = w.places[place].name;
                vec![format!("What is {x} known for?"), format!("What can you find in {x}?")]
            }
            Sound { animal } => {
                let k = a(ANIMALS[animal].kind);
                vec![format!("What sound does {k} make?"), format!("What does {k} say?")]
            }
            Legs { animal } => {
                vec![format!("How many legs does {} have?", a(ANIMALS[animal].kind))]
            }
            ThingColour { thing } => vec![format!("What colour is {}?", THING_COLOURS[thing].0)],
            Add { x, y } => vec![
                format!("What is {x} plus {y}?"),
                format!("What is {x} + {y}?"),
                format!("Can you add {x} and {y}?"),
                format!("What do you get when you add {x} and {y}?"),
            ],
            Sub { x, y } => vec![
                format!("What is {x} minus {y}?"),
                format!("What is {x} - {y}?"),
                format!("What do you get when you take {y} from {x}?"),
            ],
            After { n } => {
                vec![format!("What number comes after {n}?"), format!("What comes after {n}?")]
            }
            Before { n } => {
                vec![format!("What number comes before {n}?"), format!("What comes before {n}?")]
            }
            CountUp { from, to } => vec![
                format!("Count from {from} to {to}."),
                format!("Can you count from {from} to {to}?"),
                format!("Please count from {from} to {to}."),
            ],
            WordAdd { subject, x, y, item } => {
                let (setup, result) = word_problem_add(subject, x, y, item);
                let pron = result.split(' ').next().unwrap_or("She").to_lowercase();
                vec![format!("{setup} How many {} does {pron} have now?", COUNTABLES[item].1)]
            }
            WordSub { subject, x, y, item } => {
                let (setup, _) = word_problem_sub(subject, x, y, item);
                vec![format!("{setup} How many {} are left?", COUNTABLES[item].1)]
            }
            Greeting { i } => vec![GREETINGS[i].0.to_string()],
            Thanks { i } => vec![THANKS[i].0.to_string()],
            Bye { i } => vec![BYES[i].0.to_string()],
            About { p } => {
                fill(&["Tell me about {P}.", "Who is {P}?", "What do you know about {P}?"], p)
            }
            AboutTown { place } => {
                let x = w.places[place].name;
                vec![format!("Tell me about {x}."), format!("What is {x} like?")]
            }
            Story { p } => fill(
                &[
                    "Tell me a short story about {P}.",
                    "Can you tell me a story about {P}?",
                    "Please write a short story about {P}.",
                ],
                p,
            ),
            Stranger { name, what } => vec![STRANGER_QUESTIONS[what].replace("{S}", name)],
        }
    }

    /// The short checkable answer, for questions that have one.
    pub(crate) fn answer(&self, w: &World) -> Option<String> {
        use Question::*;
        let person = |p: usize| &w.people[p];
        Some(match *self {
            ObjColour { p, o } => w.colour_of(p, o)?.to_string(),
            HasObject { p, o } => {
                if w.colour_of(p, o).is_some() { "yes" } else { "no" }.to_string()
            }
            Lives { p } => w.places[person(p).place].name.to_string(),
            PetKind { p } => ANIMALS[person(p).pet_kind].kind.to_string(),
            PetName { p } => person(p).pet_name.to_string(),
            Count { p } => person(p).count.to_string(),
            Age { p } => person(p).age.to_string(),
            FavColour { p } => COLOURS[person(p).fav_colour].to_string(),
            FavFood { p } => FOODS[person(p).fav_food].to_string(),
            Friend { p } => w.people[person(p).friend].name.to_string(),
            Landmark { place } => LANDMARKS[w.places[place].landmark].1.to_string(),
            Sound { animal } => ANIMALS[animal].sound.to_string(),
            Legs { animal } => ANIMALS[animal].legs.to_string(),
            ThingColour { thing } => THING_COLOURS[thing].1.to_string(),
            Add { x, y } => (x + y).to_string(),
            Sub { x, y } => (x - y).to_string(),
            After { n } => (n + 1).to_string(),
            Before { n } => (n - 1).to_string(),
            CountUp { from, to } => {
                (from..=to).map(|n| n.to_string()).collect::<Vec<_>>().join(", ")
            }
            WordAdd { x, y, .. } => (x + y).to_string(),
            WordSub { x, y, .. } => (x - y).to_string(),
            MissingObject { .. }
            | Greeting { .. }
            | Thanks { .. }
            | Bye { .. }
            | About { .. }
            | AboutTown { .. }
            | Story { .. }
            | Stranger { .. } => return None,
        })
    }

    /// The ideal assistant response to `phrasing` (one of [`Question::phrasings`]).
    pub(crate) fn response(&self, w: &World, phrasing: &str, r: &mut Rng) -> String {
        use Question::*;
        let person = |p: usize| &w.people[p];
        let body = match *self {
            ObjColour { p, o } => {
                format!(
                    "{}'s {} is {}.",
                    person(p).name,
                    OBJECTS[o],
                    w.colour_of(p, o).unwrap_or("?")
                )
            }
            HasObject { p, o } => match w.colour_of(p, o) {
                Some(c) => {
                    format!("Yes, {} has {}.", person(p).name, a(&format!("{c} {}", OBJECTS[o])))
                }
                None => format!("No, {} does not have {}.", person(p).name, a(OBJECTS[o])),
            },
            MissingObject { p, o } => {
                let owned: Vec<String> = person(p)
                    .objects
                    .iter()
                    .map(|&(o, c)| a(&format!("{} {}", COLOURS[c], OBJECTS[o])))
                    .collect();
                let n = person(p).name;
                format!("{n} does not have {}. {n} has {}.", a(OBJECTS[o]), and_list(&owned))
            }
            Lives { p } => {
                format!("{} lives in {}.", person(p).name, w.places[person(p).place].name)
            }
            PetKind { p } => {
                format!(
                    "{} has {} called {}.",
                    person(p).name,
                    a(ANIMALS[person(p).pet_kind].kind),
                    person(p).pet_name
                )
            }
            PetName { p } => {
                format!(
                    "{}'s {} is called {}.",
                    person(p).name,
                    ANIMALS[person(p).pet_kind].kind,
                    person(p).pet_name
                )
            }
            Count { p } => format!(
                "{} has {} {}.",
                person(p).name,
                person(p).count,
                COUNTABLES[person(p).countable].1
            ),
            Age { p } => format!("{} is {} years old.", person(p).name, person(p).age),
            FavColour { p } => format!(
                "{}'s favourite colour is {}.",
                person(p).name,
                COLOURS[person(p).fav_colour]
            ),
            FavFood { p } => {
                format!("{}'s favourite food is {}.", person(p).name, FOODS[person(p).fav_food])
            }
            Friend { p } => {
                format!("{}'s best friend is {}.", person(p).name, w.people[person(p).friend].name)
            }
            Landmark { place } => {
                format!("{} has {}.", w.places[place].name, LANDMARKS[w.places[place].landmark].0)
            }
            Sound { animal } => {
                format!("{} says {}.", capitalise(&a(ANIMALS[animal].kind)), ANIMALS[animal].sound)
            }
            Legs { animal } => format!(
                "{} has {} legs.",
                capitalise(&a(ANIMALS[animal].kind)),
                ANIMALS[animal].legs
            ),
            ThingColour { thing } => {
                format!("{} is {}.", capitalise(THING_COLOURS[thing].0), THING_COLOURS[thing].1)
            }
            Add { x, y } => format!("{x} plus {y} is {}.", x + y),
            Sub { x, y } => format!("{x} minus {y} is {}.", x - y),
            After { n } => format!("The number after {n} is {}.", n + 1),
            Before { n } => format!("The number before {n} is {}.", n - 1),
            CountUp { .. } => format!("{}.", self.answer(w).unwrap_or_default()),
            WordAdd { subject, x, y, item } => word_problem_add(subject, x, y, item).1,
            WordSub { subject, x, y, item } => word_problem_sub(subject, x, y, item).1,
            Greeting { i } => GREETINGS[i].1.to_string(),
            Thanks { i } => THANKS[i].1.to_string(),
            Bye { i } => BYES[i].1.to_string(),
            About { p } => about(w, p, r),
            AboutTown { place } => {
                let x = w.places[place].name;
                let people: Vec<String> =
                    w.residents(place).into_iter().map(String::from).collect();
                let verb = if people.len() == 1 { "lives" } else { "live" };
                format!(
                    "{x} is a town with {}. {} {verb} in {x}.",
                    LANDMARKS[w.places[place].landmark].0,
                    and_list(&people)
                )
            }
            Story { p } => short_story(w, p, r),
            Stranger { name, .. } => format!("I am sorry, but I do not know anyone called {name}."),
        };
        if is_request(phrasing) { format!("Sure! {body}") } else { body }
    }
}

fn about(w: &World, p: usize, r: &mut Rng) -> String {
    let person = &w.people[p];
    let mut s = vec![format!(
        "{} is {} years old and lives in {}.",
        person.name, person.age, w.places[person.place].name
    )];
    // Two more facts, never the two already given (facts 0 and 6: home and age).
    let others: Vec<usize> = (0..PERSON_FACTS).filter(|&f| f != 0 && f != 6).collect();
    for f in r.sample(&others, 2) {
        s.push(person_fact(w, p, f, r));
    }
    s.join(" ")
}

fn short_story(w: &World, p: usize, r: &mut Rng) -> String {
    let person = &w.people[p];
    let n = person.name;
    let (o, c) = person.objects[r.below(N_OBJECTS)];
    let visit = w.places[r.below(w.places.len())].name;
    format!(
        "One day, {n} went to {visit} with {} the {}. {n} took the {} {} and played with {} all afternoon. \
         In the evening, {n} went home to {}.",
        person.pet_name,
        ANIMALS[person.pet_kind].kind,
        COLOURS[c],
        OBJECTS[o],
        w.people[person.friend].name,
        w.places[person.place].name
    )
}

/// `chat` records: each chat question once, some twice in another phrasing, shuffled.
pub(crate) fn chat(w: &World, seed: u64) -> Vec<serde_json::Value> {
    let mut r = Rng::fork(seed, "chat");
    let mut out = Vec::new();
    for q in split(w, seed).chat {
        let phrasings = q.phrasings(w);
        let first = r.below(phrasings.len());
        let mut picks = vec![first];
        if phrasings.len() > 1 && r.percent(SECOND_PHRASING_PERCENT) {
            picks.push((first + 1 + r.below(phrasings.len() - 1)) % phrasings.len());
        }
        for i in picks {
            let response = q.response(w, &phrasings[i], &mut r);
            out.push(serde_json::json!({
                "messages": [
                    { "role": "user", "content": phrasings[i] },
                    { "role": "assistant", "content": response },
                ]
            }));
        }
    }
    r.shuffle(&mut out);
    out
}

/// `prompts` records: each held-out question in one phrasing, with its answer when checkable.
pub(crate) fn prompts(w: &World, seed: u64) -> Vec<serde_json::Value> {
    prompt_records(w, &split(w, seed).held, Rng::fork(seed, "prompts"))
}

/// `rl-prompts` records: every question that is not held out (the RLHF questions, and the chat
/// questions asked again), in one phrasing each, with its answer when checkable (the rule
/// labeler ranks by it). The reward model needs many ranked prompts to learn what makes an
/// answer right, not only the few hundred no fine-tuning conversation shows.
pub(crate) fn rl_prompts(w: &World, seed: u64) -> Vec<serde_json::Value> {
    let Split { chat, rl, .. } = split(w, seed);
    prompt_records(w, &[rl, chat].concat(), Rng::fork(seed, "rl-prompts"))
}

fn prompt_records(w: &World, questions: &[Question], mut r: Rng) -> Vec<serde_json::Value> {
    let mut out: Vec<serde_json::Value> = questions
        .iter()
        .map(|q| {
            let phrasings = q.phrasings(w);
            let prompt = &phrasings[r.below(phrasings.len())];
            match q.answer(w) {
                Some(answer) => serde_json::json!({ "prompt": prompt, "answer": answer }),
                None => serde_json::json!({ "prompt": prompt }),
            }
        })
        .collect();
    r.shuffle(&mut out);
    out
}
