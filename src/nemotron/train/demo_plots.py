"""Plot outlines for the demo stories: each fills a `Teller` beat by beat, choosing one phrasing per
beat, with the story's fields ({name}, {he}, {f_name}, {thing}, {at_place} ...) filled in."""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from nemotron.train.demo_world import FOODS

if TYPE_CHECKING:
    from nemotron.train.demo_stories import Teller


def _intro(t: Teller) -> None:
    t.say("Once upon a time, there was {a_hero} named {name}.",
          "Once upon a time, in a small town, there lived {a_hero} named {name}.",
          "There once was {a_hero} named {name}.",
          "{name} was {a_hero}.",
          "Once there was {a_hero}. {His} name was {name}.")
    t.say("{He} loved to {hobby}.", "{He} liked to {hobby} every day.", "Every day, {name} liked to {hobby}.",
          "More than anything, {name} loved to {hobby}.")


def _lost_toy(t: Teller) -> None:
    _intro(t)
    t.say("{name} had {a_thing}.", "{name} had a favorite toy. It was {a_thing}.",
          "{His} favorite toy was {a_thing}.")
    t.say("{He} loved to {play} it every day.", "{He} took it everywhere {he} went.")
    t.paragraph()
    t.say("One {weather} day, {name} went {to_place} with {his} {thing}.",
          "One day, {name} took {his} {thing} {to_place}.")
    t.say("{He} saw {sight} and {sight2}.", "There were {sight} and {sight2}.")
    t.say("{He} played for a long time and had lots of fun.", "{name} {fun} and played with {his} {thing}.")
    t.say("When it was time to go home, {name} looked for {his} {thing}. It was gone!",
          "After a while, {he} looked around. {His} {thing} was gone!",
          "But when {he} turned around, {his} {thing} was not there!")
    t.say("{name} felt very {bad}.", "{name} was very sad. {He} started to cry.",
          "{name} felt {bad}. {He} did not know what to do.")
    t.say('"Where is my {thing}?" {he} said.', '"Oh no! Where did my {thing} go?" {he} cried.')
    t.say("{He} looked {spot}, but it was not there.", "First {he} looked {spot}. It was not there.")
    t.maybe(0.7, "Then {he} looked {spot2}, but it was not there either.")
    t.paragraph()
    t.say("Then {a_friend} named {f_name} came by.", "Just then, {his} friend {f_name} walked by.",
          "Soon {f_name} came along. {f_He} was {a_friend}.")
    t.say('"Why are you sad?" asked {f_name}.', '"What is wrong, {name}?" asked {f_name}.')
    t.say('"I lost my {thing}," said {name}.', '"I cannot find my {thing}," {name} said.')
    t.say('"Do not worry. I will help you look," said {f_name}.',
          '"Let us look for it together," said {f_name}.')
    t.say("{f_name} looked {spot3}. There was the {thing}!",
          "They looked together, and soon {f_name} found the {thing} {spot3}.",
          "They searched and searched. At last, they found the {thing} {spot3}.")
    t.say("{name} was so happy.", "{name} jumped for joy.", "{name} smiled from ear to ear.")
    t.say('"Thank you, {f_name}!" {he} said.', '"Thank you for helping me," said {name}.')
    t.maybe(0.5, "{He} gave {f_name} a big hug.")
    t.say("After that, they played together until the sun went down.",
          "From that day on, {name} always kept {his} {thing} close.",
          "{name} learned to take good care of {his} things.",
          "From that day on, {name} and {f_name} were best friends.")


def _new_friend(t: Teller) -> None:
    _intro(t)
    t.say("One {weather} day, {name} went {to_place}.", "One morning, {name} went {to_place}.")
    t.say("{He} saw {sight} and {sight2}.", "There were {sight} and {sight2}.")
    t.say("{name} wanted to play, but {he} did not have anyone to play with.",
          "{He} felt a little lonely, because {he} had no one to play with.")
    t.say("Then {he} saw {a_friend} sitting alone {spot}.", "Then {he} saw {a_friend} named {f_name} {spot}.")
    t.say("{name} was a bit shy, but {he} walked over and said hello.", "{name} walked over with a big smile.")
    t.say('"Hi, I am {name}. What is your name?" {he} asked.', '"Hello! My name is {name}," {he} said.')
    t.say('"I am {f_name}," said the {f_kind}.', '"My name is {f_name}," the {f_kind} said with a smile.')
    t.say('"Do you want to play with me?" asked {name}.', '"Would you like to play together?" asked {name}.')
    t.say('{f_name} smiled and said, "Yes, I would love to!"', '"Yes, please!" said {f_name}.')
    t.paragraph()
    t.say("They played {game} together.", "First, they played {game}.", "They played {game} and laughed a lot.")
    t.say("Then they {fun}.", "After that, they {fun}.")
    t.maybe(0.6, "They had so much fun together.", "They laughed and laughed.")
    t.say("When the sun began to set, it was time to go home.", "Soon it was time to go home.")
    t.say('"Can we play again tomorrow?" asked {f_name}.', '"Let us play again tomorrow," said {f_name}.')
    t.say('"Yes!" said {name}.', '"Yes, I would like that," said {name}.')
    t.say("{name} was happy. {He} had a new friend.", "From that day on, {name} and {f_name} were best friends.",
          "{name} went home with a big smile. {He} was glad {he} had said hello.")


def _fear(t: Teller) -> None:
    _intro(t)
    fear = t.rng.choice(("dark", "slide", "water", "thunder"))
    if fear == "dark":
        t.say("But {name} had a secret. {He} was afraid of the dark.", "{name} was afraid of the dark.")
        t.say("Every night, when the lights went off, {he} felt scared.",
              "At night, the shadows in {his} room looked big and strange.")
        t.say('One night, {he} called, "{Grown}, I am scared!"', 'One night, {name} called for {his} {grown}.')
        t.say("{His} {grown} came and sat on the bed.", "{His} {grown} came in and gave {him} a hug.")
        t.say('"There is nothing to be afraid of," {g_he} said. "The dark is just your room without the light."',
              '"The dark cannot hurt you," {g_he} said softly. "Everything is the same as in the day."')
        t.say("Then {g_he} gave {name} a little night light shaped like a star.",
              "Then {g_he} opened the curtains, so {name} could see the moon.")
        t.say("{name} looked at the soft light and felt better.", "{name} felt calm and safe.")
        t.say("Soon {he} closed {his} eyes and fell asleep.", "Soon {he} was fast asleep.")
        t.say("From then on, {name} was not afraid of the dark anymore.",
              "After that night, the dark did not scare {name} anymore.")
    elif fear == "slide":
        t.say("One day, {name} went to the playground with {f_name}.",
              "One day, {name} and {f_name} went to the playground.")
        t.say("There was a very tall slide.", "In the middle of the playground stood a big, tall slide.")
        t.say("{name} wanted to go down, but {he} was scared.", "{name} looked up at the slide and felt scared.")
        t.say('"It is too high," {he} said.', '"What if I fall?" {he} asked.')
        t.say('"You can do it," said {f_name}. "I will go right behind you."',
              '"Be brave," said {f_name}. "I will stay with you."')
        t.say("{name} climbed up the ladder slowly, one step at a time.", "Slowly, {name} climbed to the top.")
        t.say("{He} took a deep breath and let go. Whoosh!", "{He} sat down, held on tight, and then let go. Whee!")
        t.say("It was so much fun!", "{He} went down very fast and landed in the sand.")
        t.say('"Again!" {he} shouted with a big smile.', '"Let us do it again!" {he} laughed.')
        t.say("{name} was proud of {himself}.", "That day, {name} learned that being brave can be fun.")
    elif fear == "water":
        t.say("One {weather} day, {name} went to the lake with {his} {grown}.",
              "One summer day, {name} and {his} {grown} went to the lake.")
        t.say("{name} did not know how to swim, and the water looked deep.",
              "{name} was afraid of the water. {He} could not swim yet.")
        t.say('"I will hold you," said {his} {grown}. "Just kick your legs."',
              '"Do not worry. I will help you," said {his} {grown}.')
        t.say("{name} held on to {his} {grown} and kicked {his} legs.",
              "{name} stepped into the water slowly. It was cool and nice.")
        t.say("Splash, splash! {He} kicked and moved {his} arms.",
              "{He} kicked {his} legs and paddled with {his} arms.")
        t.say("Then {his} {grown} let go, and {name} was swimming all by {himself}!",
              "After a while, {name} could float all alone.")
        t.say('"I can swim!" {he} shouted.', '"Look at me!" {he} called happily.')
        t.say("{name} was not afraid of the water anymore.", "{name} felt very proud. Now {he} loved the water.")
    else:
        t.say("One night, there was a big storm.", "One evening, dark clouds filled the sky and a storm came.")
        t.say("The wind blew and the rain fell. Then there was a loud boom of thunder!",
              "Rain hit the window. Boom! The thunder was very loud.")
        t.say("{name} was scared and hid under {his} blanket.", "{name} jumped and ran to {his} {grown}.")
        t.say('"Thunder is just the sound that lightning makes," said {his} {grown}. "It cannot hurt you inside."',
              '"The storm is outside, and we are safe inside," said {his} {grown}.')
        t.say("They counted the seconds between the flash and the boom.", "They sat together and listened to the rain.")
        t.say("Soon the thunder got quieter, and the storm went away.", "After a while, the storm moved far away.")
        t.say("In the morning, there was a big rainbow in the sky.", "The next morning, the sun came out again.")
        t.say("{name} smiled. The storm was not so scary after all.", "{name} was not afraid of thunder anymore.")


def _sharing(t: Teller) -> None:
    _intro(t)
    food, taste = t.rng.choice(FOODS)
    t.fields.update(food=food, taste=taste)
    t.say("One day, {his} {grown} gave {him} a basket of {taste} {food}.",
          "One morning, {name} had a box of {taste} {food}.")
    t.say("{name} took the {food} {to_place}.", "{He} went {to_place} to eat them.")
    t.say("There {he} met {a_friend} named {f_name}.", "There, {he} saw {f_name}.")
    t.say("{f_name} looked sad. {f_He} did not have any snack.", "{f_name} was hungry, but {f_he} had nothing to eat.")
    t.paragraph()
    t.say("{name} wanted to eat all the {food} {himself}.", "{name} looked at the {food}. They were so {taste}.")
    t.say("But then {he} remembered what {his} {grown} always said: sharing is caring.",
          "But then {he} thought about how {f_name} felt.")
    t.say('"Would you like some {food}?" asked {name}.', '"Here, you can have some of my {food}," said {name}.')
    t.say('"Oh, yes! Thank you!" said {f_name}.', '{f_name} smiled. "Thank you, {name}!"')
    t.say("They sat together and ate the {food}.", "They shared the {food} and talked and laughed.")
    t.say("The {food} tasted even better together.", "It was the best snack ever.")
    t.maybe(0.6, "Then {f_name} shared {f_his} {thing} with {name}, and they played {game}.")
    t.say("{name} learned that sharing makes everyone happy.", "Sharing made {name} feel warm inside.",
          "From that day on, {name} and {f_name} always shared their snacks.")


def _helping(t: Teller) -> None:
    _intro(t)
    case = t.rng.choice(("bird", "kitten", "duckling", "puppy"))
    t.say("One {weather} day, {name} was playing {at_place}.", "One day, {name} went {to_place}.")
    if case == "bird":
        t.say("{He} heard a small sound. Tweet, tweet!", "Suddenly, {he} heard a little cry. Tweet!")
        t.say("It was a little bird. Its wing was hurt, and it could not fly.",
              "{He} found a small bird {spot}. Its wing was hurt.")
        t.say("{name} picked up the bird very gently.", "{name} held the bird carefully in {his} hands.")
        t.say("{He} took it home, and {his} {grown} helped {him} make a soft bed in a box.",
              "{His} {grown} helped {him} put the bird in a box with a soft cloth.")
        t.say("Every day, {name} gave the bird water and seeds.", "{name} fed the bird and kept it warm.")
        t.say("After a few days, the wing was better.", "Soon the bird began to flap its wings again.")
        t.say("{name} opened the box, and the bird flew up into the sky.",
              "One morning, the bird flew out of the box and up into a tree.")
        t.say("It sang a happy song, as if to say thank you.", "It came back every morning to sing for {name}.")
    elif case == "kitten":
        t.say("{He} heard a sad sound. Meow! Meow!", "Then {he} heard a tiny meow.")
        t.say("A little kitten was stuck high up in a tree.", "{He} looked up and saw a kitten on a high branch.")
        t.say("The kitten was too scared to come down.", "The poor kitten could not get down.")
        t.say("{name} ran to get {his} {grown}.", '"Hold on, little kitten! I will get help," said {name}.')
        t.say("{His} {grown} brought a ladder and climbed up carefully.", "{His} {grown} came with a ladder.")
        t.say("{G_he} reached the kitten and brought it down safely.", "Soon the kitten was safe on the ground.")
        t.say("The kitten purred and rubbed against {name}.", "The kitten licked {Name_s} hand.")
        t.say("{name} was glad {he} had helped.", "{name} felt happy and proud.")
    elif case == "duckling":
        t.say("{He} saw a little duckling all alone {spot}.", "{He} found a tiny duckling {spot}. It was crying.")
        t.say('"Quack, quack!" said the duckling. It had lost its mother.', "The duckling could not find its mother.")
        t.say('"Do not be sad. I will help you find your mom," said {name}.', "{name} wanted to help.")
        t.say("They walked to the pond together.", "{name} and the duckling went to look near the water.")
        t.say("There was the mother duck! She was looking for her baby.",
              "Soon they saw a big duck swimming in circles. It was the mother!")
        t.say("The duckling ran to its mother, and they swam away together.",
              "The duckling jumped into the water and swam to its mom.")
        t.say('"Quack!" said the mother duck, as if to say thank you.',
              "The mother duck looked at {name} and quacked happily.")
        t.say("{name} smiled. Helping others felt good.", "{name} was happy that the little family was together again.")
    else:
        t.say("{He} saw a little puppy sitting alone {spot}.", "{He} found a small puppy {spot}. It looked lost.")
        t.say("The puppy had a collar with a name on it. It said Rex.", "On its collar was a name: Rex.")
        t.say("{name} and {his} {grown} walked up and down the street with the puppy.",
              "{name} decided to help Rex find his home.")
        t.say('"Is this your puppy?" {name} asked the neighbors.', "They asked everyone they met.")
        t.say("At last, a girl came running. \"Rex! There you are!\" she cried.",
              "Soon a boy came running down the street, calling, \"Rex! Rex!\"")
        t.say("The puppy wagged his tail and jumped into the child's arms.",
              "Rex barked happily and ran to his friend.")
        t.say('"Thank you for finding him," the child said to {name}.', "The child thanked {name} again and again.")
        t.say("{name} felt warm and happy inside.", "{name} was glad {he} had helped Rex get home.")



def _making(t: Teller) -> None:
    _intro(t)
    task = t.rng.choice(("cake", "sandcastle", "tower", "seeds", "picture"))
    if task == "cake":
        t.say("One morning, {name} and {his} {grown} decided to bake a cake.",
              "One day, {his} {grown} said, \"Let us bake a cake!\"")
        t.say("They put flour, sugar, eggs and milk in a big bowl.", "First, they got flour, eggs, butter and sugar.")
        t.say("{name} stirred and stirred until the batter was smooth.",
              "{name} helped mix everything with a big spoon.")
        t.say("Oops! Some flour fell on the floor, and {name} laughed.", "There was a little flour on {Name_s} nose.")
        t.say("Then they put the cake in the oven.", "{His} {grown} put the cake in the hot oven.")
        t.say("Soon the whole house smelled sweet and warm.", "While it baked, they cleaned the kitchen together.")
        t.say("When the cake was ready, they put pink frosting on top.",
              "At last, the cake was ready. It was big and golden.")
        t.say("{name} shared the cake with {his} family and {f_name}.",
              "They ate the cake together, and it was delicious.")
        t.say("Baking together was the best part of the day.", "{name} could not wait to bake again.")
    elif task == "sandcastle":
        t.say("One {weather} day, {name} went to the beach with {f_name}.",
              "One summer day, {name} and {f_name} went to the beach.")
        t.say("{He} wanted to build the biggest sandcastle in the world.", "{He} decided to build a big sandcastle.")
        t.say("{He} filled {his} bucket with wet sand and made tall towers.",
              "{He} dug and patted the sand into walls and towers.")
        t.say("But then a big wave came and washed the castle away!",
              "Suddenly, a wave rushed in. Splash! The castle was gone.")
        t.say("{name} felt sad.", "{name} looked at the flat sand and wanted to cry.")
        t.say('"Let us build it again, a little farther from the water," said {f_name}.',
              "Then {he} had an idea. {He} would build it higher up the beach.")
        t.say("This time, they made it even bigger, with a moat and a flag on top.",
              "The new castle had four towers and a shell on every wall.")
        t.say("The waves could not reach it.", "It stood strong all afternoon.")
        t.say("{name} was proud. Trying again had worked.", "{name} learned that it is good to try again.")
    elif task == "tower":
        t.say("One rainy afternoon, {name} got out {his} box of blocks.", "{name} had a big box of colorful blocks.")
        t.say("{He} wanted to build a tower as tall as {himself}.", "{He} wanted to build the tallest tower ever.")
        t.say("{He} put one block on top of another, higher and higher.", "Block by block, the tower grew.")
        t.say("But the tower wobbled, and then it fell down with a crash!",
              "Then it started to shake. Crash! The blocks fell everywhere.")
        t.say("{name} was upset, but {his} {grown} sat down next to {him}.",
              "{name} frowned. Then {his} {grown} came to help.")
        t.say('"Put the big blocks at the bottom," {g_he} said.', '"A strong tower needs a wide base," {g_he} said.')
        t.say("{name} tried again, with the big blocks at the bottom and the small ones on top.",
              "This time, {name} built slowly and carefully.")
        t.say("The tower stood tall and did not fall.", "Soon the tower was taller than {name}!")
        t.say('"I did it!" {he} cheered.', "{name} clapped {his} hands with joy.")
    elif task == "seeds":
        t.say("One spring day, {his} {grown} gave {name} a small bag of seeds.",
              "In the spring, {name} wanted to grow flowers.")
        t.say("{He} dug little holes in the garden and put the seeds in.", "{He} planted the seeds in the soft soil.")
        t.say("Every day, {he} watered them and waited.", "Every morning, {name} gave the seeds some water.")
        t.say("For many days, nothing happened.", "At first, {he} could not see anything.")
        t.say('"Be patient," said {his} {grown}. "Seeds need time, water and sunlight."',
              "{name} wondered if the seeds would ever grow.")
        t.say("Then one morning, {name} saw tiny green sprouts!", "One day, small green leaves came out of the ground.")
        t.say("The sprouts grew taller and taller, and soon there were bright flowers everywhere.",
              "Soon the garden was full of red and yellow flowers.")
        t.say("{name} picked some flowers and gave them to {his} {grown}.", "{name} was very proud of {his} garden.")
        t.say("{He} learned that good things take time.", "Waiting had been worth it.")
    else:
        t.say("One day, {name} wanted to make a gift for {his} {grown}.",
              "{name} wanted to give {his} {grown} a surprise.")
        t.say("{He} took out paper and crayons and began to draw.", "{He} got {his} crayons and a big sheet of paper.")
        t.say("{He} drew a house, a big yellow sun, and the whole family.",
              "{He} drew a garden with flowers, a tree and a blue sky.")
        t.say("It took a long time, but {he} did not give up.", "{He} colored very carefully.")
        t.say("When it was done, {he} gave the picture to {his} {grown}.",
              "Then {he} gave the picture to {his} {grown} with a big smile.")
        t.say('"It is beautiful! Thank you!" said {his} {grown}.',
              '"This is the best picture ever," {his} {grown} said.')
        t.say("The picture went up on the fridge for everyone to see.", "They hung the picture on the wall.")
        t.say("{name} felt proud every time {he} saw it.", "{name} was happy that {his} gift made someone smile.")


def _rainy_day(t: Teller) -> None:
    _intro(t)
    t.say("One morning, {name} wanted to go {to_place}.", "{name} had big plans to play {at_place} that day.")
    t.say("But when {he} looked out the window, it was raining.",
          "But outside, the sky was gray and it was raining hard.")
    t.say("{name} felt sad. {He} could not go outside.", '"Oh no," said {name}. "Now I cannot go out."')
    t.say('"We can have fun inside," said {his} {grown}.', "{His} {grown} had an idea.")
    first, then = t.rng.choice((
        ("They built a fort with blankets and pillows.", "Then they read books inside the fort with a flashlight."),
        ("They made a cozy fort out of chairs and blankets.", "Then they had a picnic inside the fort."),
        ("They painted pictures at the kitchen table.", "Then they hung the pictures on the wall."),
        ("They baked cookies together.", "Then they had warm cookies and milk."),
        ("They played {game} in the house.", "Then they did a big puzzle on the floor.")))
    t.say(first)
    t.say(then)
    t.say("{name} was having so much fun that {he} forgot about the rain.",
          "The day was more fun than {name} had thought.")
    t.paragraph()
    t.say("In the afternoon, the rain stopped.", "Later, the sun came out again.")
    t.say("There was a big rainbow in the sky!", "A bright rainbow shone over the houses.")
    t.say("{name} put on {his} boots and jumped in the puddles. Splash!",
          "{name} ran outside and splashed in the puddles.")
    t.say("It was a wonderful day after all.", "Rainy days could be fun too.")


_TRIP_SIGHTS = {
    "zoo": ("The lion had a big mane and gave a loud roar.", "The elephant sprayed water with its long trunk.",
            "The monkeys swung from tree to tree.", "The penguins waddled and slid into the cold water.",
            "The panda sat and ate bamboo.", "The giraffe ate leaves from the top of a tall tree.",
            "The zebra had black and white stripes."),
    "farm": ("The cows said moo and ate green grass.", "The pigs rolled in the mud and said oink.",
             "The sheep had soft white wool.", "The chickens said cluck and laid brown eggs.",
             "A big brown horse said neigh.", "The ducks swam in the pond and said quack.",
             "A little goat tried to eat {Name_s} hat!"),
}
_FAVOURITE = {"zoo": ("lion", "elephant", "monkeys", "penguins", "panda", "giraffe", "zebra"),
              "farm": ("cows", "pigs", "sheep", "chickens", "horse", "ducks", "goat")}


def _trip(t: Teller) -> None:
    _intro(t)
    where = t.rng.choice(("zoo", "farm"))
    t.fields["where"] = where
    t.say("One {weather} Saturday, {name} and {his} {grown} went to the {where}.",
          "One day, {Name_s} family took a trip to the {where}.")
    t.say("{name} was so excited. {He} had never been to the {where} before.",
          "{name} could not wait to see the animals.")
    picks = t.rng.sample(range(len(_TRIP_SIGHTS[where])), 3)
    t.say("First, they saw the {0}.".format(_FAVOURITE[where][picks[0]]))
    for k in picks:
        t.say(_TRIP_SIGHTS[where][k])
    t.fields["fav"] = _FAVOURITE[where][t.rng.choice(picks)]
    t.say("{Name_s} favorite was the {fav}.", "{name} liked the {fav} best of all.")
    t.say("They ate lunch on a bench and watched the animals.", "At lunch, they had sandwiches under a big tree.")
    t.say("On the way home, {name} fell asleep in the car.", "When they got home, {name} was tired but happy.")
    t.say("{He} dreamed about the {fav} all night.", "It was the best day ever.")


def _race(t: Teller) -> None:
    _intro(t)
    t.say("One day, {name} and {f_name} decided to have a race {at_place}.",
          '"Let us have a race!" said {f_name} one day {at_place}.')
    t.say('"Ready, set, go!" they shouted, and off they ran.', "They stood in a line. Ready, set, go!")
    t.say("{name} ran as fast as {he} could.", "They ran side by side, laughing.")
    t.say("Then {f_name} tripped over a rock and fell down.", "Suddenly, {f_name} slipped and fell on the grass.")
    t.say('"Ouch!" cried {f_name}.', "{f_name} sat on the ground and rubbed {f_his} knee.")
    t.say("{name} stopped running and went back.", "{name} could have won, but {he} stopped.")
    t.say('"Are you okay?" {he} asked, and helped {f_name} get up.', "{He} held out {his} hand and helped {f_name} up.")
    t.say("They walked to the finish line together, hand in hand.",
          "Together they crossed the finish line at the same time.")
    t.say('"We both won!" said {f_name}.', "Everyone who was watching clapped for them.")
    t.say("{name} learned that being a good friend is better than winning.",
          "It was the best race ever, because they finished it together.")


def _birthday(t: Teller) -> None:
    _intro(t)
    t.fields["age"] = t.rng.choice(("four", "five", "six", "seven"))
    t.say("Today was {Name_s} birthday. {He} was {age} years old!", "It was a special day. {name} was turning {age}.")
    t.say("{He} woke up early and jumped out of bed.", "{He} woke up with a big smile.")
    t.say("{His} {grown} had made a big chocolate cake with {age} candles.",
          "In the kitchen, there was a cake with {age} candles.")
    t.say("In the afternoon, {f_name} and other friends came to the party.",
          "Soon {his} friends came, and {f_name} was the first to arrive.")
    t.say("They played {game} and sang songs.", "They played {game} and ate yummy snacks.")
    t.say("Then {f_name} gave {name} a present. It was {a_gift}!", "{f_name} had a present for {name}: {a_gift}.")
    t.say('"I love it! Thank you!" said {name}.', "{name} hugged {f_name}. It was just what {he} wanted.")
    t.say("Then everyone sang happy birthday, and {name} blew out the candles.",
          "{name} made a wish and blew out all the candles.")
    t.say("It was the best birthday ever.", "That night, {name} fell asleep with {his} new {thing} next to {him}.")


PLOTS: dict[str, Callable[[Teller], None]] = {
    "lost_toy": _lost_toy, "new_friend": _new_friend, "fear": _fear, "sharing": _sharing, "helping": _helping,
    "making": _making, "rainy_day": _rainy_day, "trip": _trip, "race": _race, "birthday": _birthday,
}
CHILD_ONLY = frozenset({"trip"})  # an animal hero's family taking it to the zoo reads oddly
